"""Real byte counts: quantization + lossless coding of latents, Pillow codecs, PCA, and the `rd` command."""
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from src import compression as C
from src.metrics import all_metrics
from src.pca import PCA
from src import rd
from src.__main__ import main
from src.report import tables
from src.report.style import RD_FIGURES
from src.utils import UserError


def _latents():
    rng = np.random.default_rng(0)
    return {"ae": np.maximum(rng.normal(size=(4, 32, 32)), 0).astype(np.float32),  # ReLU map: many zeros
            "vae": (rng.normal(size=200) * 3 + 1).astype(np.float32),
            "tiny": np.array([0.25], dtype=np.float32)}


# ---------------------------------------------------------------- quantization and coding

@pytest.mark.parametrize("coder", ["packed", "zlib", "lzma", "auto"])
@pytest.mark.parametrize("bits", [1, 2, 5, 8, 9, 12, 16])
def test_decode_of_encode_is_exactly_the_dequantized_latent(coder, bits):
    for name, z in _latents().items():
        qz = C.quantize(z, bits)
        blob = C.encode_latent(z, bits, coder)
        out = C.decode_latent(blob, z.shape, bits)
        assert out.dtype == np.float32 and out.shape == z.shape
        np.testing.assert_array_equal(out, C.dequantize(qz), err_msg=name)
        # at most half a step from the original (plus float32 rounding of the result)
        err = np.abs(out.astype(np.float64) - z)
        assert err.max() <= float(qz.step) / 2 + 2 * np.spacing(np.abs(z).max()), (name, err.max(), qz.step)
        assert qz.q.max() <= 2**bits - 1


def test_quantization_error_halves_with_each_extra_bit():
    z = _latents()["vae"]
    errs = [np.abs(C.dequantize(C.quantize(z, b)) - z).max() for b in (4, 5, 6, 7, 8)]
    span = float(z.max() - z.min())
    for b, e in zip((4, 5, 6, 7, 8), errs):
        assert e <= span / (2**b - 1) / 2 * (1 + 1e-5)
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_packed_byte_count_is_header_plus_bits_rounded_up_to_bytes():
    for name, z in _latents().items():
        for bits in (1, 3, 8, 11, 16):
            n = z.size
            assert len(C.encode_latent(z, bits, "packed")) == 9 + math.ceil(n * bits / 8), (name, bits)


def test_auto_keeps_the_shortest_coder_and_entropy_coding_pays_on_sparse_maps():
    z = np.zeros((4, 32, 32), dtype=np.float32)
    z[0, :4, :4] = np.arange(16).reshape(4, 4)
    sizes = {c: len(C.encode_latent(z, 8, c)) for c in C.CODERS}
    assert len(C.encode_latent(z, 8, "auto")) == min(sizes.values())
    assert sizes["zlib"] < sizes["packed"] / 20  # 4,096 mostly-zero symbols compress far below 4,096 B


def test_constant_latent_and_bad_inputs():
    z = np.full(10, 3.5, dtype=np.float32)
    np.testing.assert_array_equal(C.decode_latent(C.encode_latent(z, 4), z.shape, 4), z)
    with pytest.raises(ValueError, match="NaN"):
        C.quantize(np.array([0.0, np.nan]), 8)
    for bits in (0, 17):
        with pytest.raises(UserError, match="bits"):
            C.quantize(z, bits)
    with pytest.raises(UserError, match="coder"):
        C.encode_latent(z, 8, "huffman")


def test_bpp_is_eight_times_bytes_over_pixels():
    assert C.bpp(16384, 128 * 128) == 8.0
    assert C.bpp(2048, 128 * 128) == 1.0
    assert C.bpp(0, 128 * 128) == 0.0
    assert C.bpp(128, 32 * 32) == 1.0


# ---------------------------------------------------------------- codecs

def _image(size):
    yy, xx = np.mgrid[:size, :size] / size
    rng = np.random.default_rng(3)
    img = 128 + 80 * np.sin(6 * xx) * np.cos(4 * yy) + rng.normal(0, 8, (size, size))
    return img.clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("codec,fmt,kw,setting", [
    ("jpeg", "JPEG", {"quality": 30, "optimize": True}, 30),
    ("webp", "WEBP", {"quality": 30, "method": 6}, 30),
    ("jpeg2000", "JPEG2000", {"quality_mode": "rates", "quality_layers": [20.0], "irreversible": True,
                              "no_jp2": True}, 20),
])
def test_codec_bytes_are_pillows_encoded_buffer_and_decode_is_pillows(codec, fmt, kw, setting):
    if not C.codec_available(codec):
        pytest.skip(f"Pillow without {codec}")
    img = _image(128)
    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, fmt, **kw)
    blob = C.codec_encode(img, codec, setting)
    assert blob == buf.getvalue() and len(blob) == len(buf.getvalue())
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    out = C.codec_decode(blob)
    assert out.dtype == np.uint8 and out.shape == (128, 128)
    np.testing.assert_array_equal(out, ref)
    assert np.abs(out.astype(int) - img).mean() < 20  # a lossy copy of the image, not garbage


def test_codec_knobs_move_the_rate_the_documented_way():
    img = _image(128)
    jpeg = [len(C.codec_encode(img, "jpeg", q)) for q in (5, 30, 90)]
    assert jpeg == sorted(jpeg) and jpeg[0] < jpeg[-1]
    if C.codec_available("jpeg2000"):
        # quality_mode="rates": the layer value is a compression ratio of the raw 16,384 bytes
        for ratio in (8, 16):
            assert abs(len(C.codec_encode(img, "jpeg2000", ratio)) - 16384 / ratio) < 0.15 * 16384 / ratio
    with pytest.raises(UserError, match="codec"):
        C.codec_encode(img, "gif", 50)


# ---------------------------------------------------------------- PCA

def test_pca_reconstruction_equals_a_numpy_svd_reference():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(6, 16 * 16))
    train = (128 + rng.normal(size=(80, 6)) @ basis * 6 + rng.normal(0, 3, (80, 256))).clip(0, 255)
    train = train.astype(np.uint8).reshape(80, 16, 16)
    test = train[:10]
    k = 5
    pca = PCA(k).fit(train)
    got = pca.decode(pca.encode(test)).numpy().reshape(10, -1)
    x = train.reshape(80, -1).astype(np.float64) / 255
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    v = vt[:k].T
    ref = (((test.reshape(10, -1) / 255 - mean) @ v) @ v.T + mean).clip(0, 1)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    # a truncated PCA is PCA-k' of the same fit
    small = pca.truncate(2)
    ref2 = (((test.reshape(10, -1) / 255 - mean) @ v[:, :2]) @ v[:, :2].T + mean).clip(0, 1)
    np.testing.assert_allclose(small.decode(small.encode(test)).numpy().reshape(10, -1), ref2, atol=2e-5)


def test_pca_goes_through_the_same_quantize_and_code_path():
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, (60, 16, 16), dtype=np.uint8)
    test = rng.integers(0, 256, (7, 16, 16), dtype=np.uint8)
    pts = rd.pca_points(PCA(8).fit(train), test, ks=(4, 8), bits=(4, 16), coder="packed")
    by = {p["setting"]: p for p in pts}
    assert set(by) == {"k=4, b=4", "k=4, b=16", "k=8, b=4", "k=8, b=16"}
    for k in (4, 8):
        for b in (4, 16):
            assert by[f"k={k}, b={b}"]["bytes"] == 9 + math.ceil(k * b / 8)
            assert by[f"k={k}, b={b}"]["bpp"] == pytest.approx(8 * (9 + math.ceil(k * b / 8)) / 256)
    # 16 bits are as good as float32 coefficients
    pca = PCA(8).fit(train)
    x = torch.from_numpy(test).float().div(255).unsqueeze(1)
    exact = float(all_metrics(pca.decode(pca.encode(test)), x)["psnr"].mean())
    assert by["k=8, b=16"]["psnr"] == pytest.approx(exact, abs=0.01)
    assert by["k=8, b=4"]["psnr"] < by["k=8, b=16"]["psnr"]
    front = rd.pca_points(pca, test, ks=(4, 8), bits=(4, 16), coder="packed", front_only=True)
    assert front == rd.pareto(pts) and all(p["ssim"] == by[p["setting"]]["ssim"] for p in front)


# ---------------------------------------------------------------- curves and tables

def test_pareto_interpolate_and_nearest():
    pts = [{"bpp": b, "psnr": p} for b, p in ((0.1, 20), (0.2, 19), (0.2, 25), (0.4, 24), (0.8, 30))]
    assert [(p["bpp"], p["psnr"]) for p in rd.pareto(pts)] == [(0.1, 20), (0.2, 25), (0.8, 30)]
    c = {"results": {"bpp": [0.1, 0.4], "psnr": [20.0, 30.0], "ssim": [0.5, 0.7]}}
    assert tables.interpolate(c, 0.2, "psnr") == pytest.approx(25.0)  # halfway in log(bpp)
    assert tables.interpolate(c, 0.1, "ssim") == pytest.approx(0.5)
    assert tables.interpolate(c, 0.5, "psnr") is None
    assert tables.nearest(c, 0.35) == 1 and tables.nearest(c, 1.0) is None


# ---------------------------------------------------------------- the rd command on a stored smoke grid
# (conftest's session grid ``smoke_grid``, read only; tests that write use ``smoke_copy``)

METHODS = {"ae", "vae", "pca", "jpeg", "webp", "jpeg2000", "mean"}


def test_reproduce_writes_one_compressai_json_per_method(smoke_grid):
    d = smoke_grid / "runs" / "rd"
    index = json.loads((d / "index.json").read_text())
    assert set(index["methods"]) == METHODS
    assert index["preset"] == "smoke" and index["source"] == "sample" and index["raw_bytes"] == 32 * 32
    for name in index["methods"].values():
        c = json.loads((d / name).read_text())
        assert set(c) == {"name", "description", "results"} and c["name"] and c["description"]
        r = c["results"]
        assert {"bpp", "psnr", "ssim"} <= set(r)
        n = len(r["bpp"])
        assert n >= 1 and all(len(v) == n for v in r.values())
        assert all(isinstance(v, float) for m in ("bpp", "psnr", "ssim") for v in r[m])
        assert r["bpp"] == sorted(r["bpp"])
        for b, by in zip(r["bpp"], r["bytes"]):
            assert b == pytest.approx(8 * by / 1024)
        assert all(0 < s <= 1 for s in r["ssim"])
    mean = json.loads((d / "mean.json").read_text())["results"]
    assert mean["bytes"] == [0.0] and mean["bpp"] == [0.0]
    ae = json.loads((d / "ae.json").read_text())["results"]
    assert ae["setting"] == ["b=4", "b=8"] and max(ae["bytes"]) <= 9 + 4 * 8 * 8  # <= packed 8-bit size


def test_codec_points_equal_an_independent_pillow_measurement(smoke_grid):
    from src.data import load_images
    from src.results import read_split

    faces = load_images(smoke_grid / "faces", 32, limit=48, progress=False)
    test = faces.images[read_split(smoke_grid / "runs" / "ae-none-clean-s0")["test"]]  # the split rd used
    lens, psnrs = [], []
    for img in test:
        buf = io.BytesIO()
        Image.fromarray(img, "L").save(buf, "JPEG", quality=20, optimize=True)
        lens.append(len(buf.getvalue()))
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        psnrs.append(peak_signal_noise_ratio(img / 255, dec / 255, data_range=1.0))
    r = json.loads((smoke_grid / "runs" / "rd" / "jpeg.json").read_text())["results"]
    i = r["setting"].index("q=20")
    assert r["bytes"][i] == pytest.approx(np.mean(lens))
    assert r["psnr"][i] == pytest.approx(np.mean(psnrs), abs=1e-3)


def test_rd_command_then_report_draws_figures_table_and_bytes_notes(smoke_copy, capsys):
    assert main(["rd", str(smoke_copy / "runs"), "--coder", "packed", "--device", "cpu"]) == 0
    index = json.loads((smoke_copy / "runs" / "rd" / "index.json").read_text())
    assert index["coder"] == "packed"
    readme = smoke_copy / "README.md"
    readme.write_text("# T\n\n<!-- results:start -->\n<!-- results:end -->\n")
    assert main(["report", str(smoke_copy / "runs"), "--figures", str(smoke_copy / "F"), "--readme", str(readme)]) == 0
    for name in RD_FIGURES:
        assert (smoke_copy / "F" / name).stat().st_size > 10_000
    text = (smoke_copy / "docs" / "results.md").read_text()  # published: the whole report goes to the docs
    assert "Rate–distortion" in text and "preset `smoke`" in text and "not Flickr-Faces" in text
    assert "| Target bpp | Method |" in text and "](../F/rd_psnr.png)" in text
    assert text.count("*Bytes per image:") == 2 and "800 B" in text  # VAE: 200 float32


def test_rerunning_reproduce_keeps_current_curves(smoke_grid, smoke_copy, monkeypatch):
    runs = smoke_copy / "runs"
    monkeypatch.setattr(rd, "model_points", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    before = (runs / "rd" / "index.json").stat().st_mtime_ns
    assert main(["reproduce", "--preset", "smoke", "--data", str(smoke_grid / "faces"), "--out", str(runs),
                 "--readme", "", "--no-progress"]) == 0
    assert (runs / "rd" / "index.json").stat().st_mtime_ns == before


def test_rd_without_a_grid_is_a_one_line_error(tmp_path, capsys):
    assert main(["rd", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "summary.json" in err and "\n" not in err
