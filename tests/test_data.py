"""Tests for src.data: scanning, decoding every image kind, the cache, and the split."""
from __future__ import annotations

import hashlib
import io
import os
import resource
import struct
import sys
import types
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from src import data, decode
from src.config import DataConfig
from src.data import find_images, load_images, split_indices, to_float
from src.decode import BadImage, decode_image
from src.parallel import PARALLEL_MIN
from src.utils import UserError


# ----------------------------------------------------------------------------- helpers
def ramp(h=32, w=32, seed=0) -> np.ndarray:
    """(h, w, 3) uint8 with structure in every channel, so conversions are not trivial."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, im: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def gray(path: Path, size=16, seed=0) -> Path:
    return save(path, Image.fromarray(ramp(size, size, seed)[..., 0]))


def png_with_header(path: Path, width: int, height: int) -> Path:
    """A tiny valid 8x8 PNG whose IHDR is patched to claim width x height (CRC fixed)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", width, height)  # after signature(8) + length(4) + "IHDR"(4)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # CRC covers "IHDR" + 13 data bytes
    path.write_bytes(bytes(b))
    return path


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def quiet_load(root, tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fs = load_images(root, progress=False, **kw)
    return fs, [w for w in rec if issubclass(w.category, UserWarning)]


# ----------------------------------------------------------------------------- split
def test_split_sizes_disjoint_and_deterministic():
    s = split_indices(70_000)
    assert [len(s[k]) for k in ("train", "val", "test")] == [49_000, 7_000, 14_000]
    assert [len(v) for v in split_indices(10).values()] == [7, 1, 2]
    allidx = np.concatenate(list(s.values()))
    assert np.array_equal(np.sort(allidx), np.arange(70_000))  # disjoint and covering
    for v in s.values():
        assert v.dtype == np.int64 and np.all(np.diff(v) > 0)  # sorted ascending
    again = split_indices(70_000)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = split_indices(70_000, seed=1)
    assert not np.array_equal(s["train"], other["train"])


def test_split_matches_independent_permutation():
    perm = np.random.default_rng(0).permutation(10)
    s = split_indices(10, (0.7, 0.1, 0.2), seed=0)
    assert np.array_equal(s["train"], np.sort(perm[:7]))
    assert np.array_equal(s["val"], np.sort(perm[7:8]))
    assert np.array_equal(s["test"], np.sort(perm[8:]))


def test_split_tiny_and_invalid():
    assert [len(v) for v in split_indices(3).values()] == [1, 1, 1]
    with pytest.raises(UserError):
        split_indices(2)
    with pytest.raises(UserError):
        split_indices(100, (0.5, 0.5, 0.5))
    assert [len(v) for v in split_indices(10, (0.8, 0.0, 0.2)).values()] == [8, 0, 2]


def test_dataconfig_validates_and_accepts_json_lists():
    assert DataConfig(split=[0.8, 0.1, 0.1]).split == (0.8, 0.1, 0.1)
    for bad in (dict(split=(0.5, 0.5, 0.5)), dict(split=(1.2, -0.1, -0.1)), dict(image_size=4),
                dict(limit=0), dict(sample_size=0)):
        with pytest.raises(UserError) as e:
            DataConfig(**bad)
        assert "\n" not in str(e.value)


def test_to_float():
    b = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)  # (1, 2, 2)
    x = to_float(b)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert torch.equal(to_float(np.zeros((3, 8, 8), np.uint8)), torch.zeros(3, 1, 8, 8))


# ----------------------------------------------------------------------------- decoding
def test_rgb_equals_pil_luma_and_same_size_is_exact(tmp_path):
    rgb = ramp(32, 32)
    p = save(tmp_path / "a.png", Image.fromarray(rgb))
    ref = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(decode_image(p, size=32), ref)


def test_rgba_palette_and_one_bit(tmp_path):
    rgb = ramp(16, 16)
    rgba = np.dstack([rgb, np.full((16, 16), 7, np.uint8)])  # nearly transparent: alpha is dropped
    p = save(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(decode_image(p, 16), np.asarray(Image.fromarray(rgb).convert("L")))
    pal = Image.fromarray(rgb).quantize(16)
    p = save(tmp_path / "pal.png", pal)
    assert np.array_equal(decode_image(p, 16), np.asarray(pal.convert("RGB").convert("L")))
    bits = Image.fromarray(rgb[..., 0] > 127)
    p = save(tmp_path / "bits.png", bits)
    assert set(np.unique(decode_image(p, 16))) <= {0, 255}


def test_16_bit_is_scaled_not_clipped(tmp_path):
    a = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    p = save(tmp_path / "deep.png", Image.fromarray(a))
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    out = decode_image(p, 16)
    assert out[0, 0] == 0 and out[-1, -1] == 255
    assert np.array_equal(out, np.rint(a / 65535 * 255).astype(np.uint8))
    # 16-bit PGM opens as mode "I"; same scaling
    pgm = tmp_path / "deep.pgm"
    pgm.write_bytes(b"P5 16 16 65535\n" + a.astype(">u2").tobytes())
    assert np.array_equal(decode_image(pgm, 16), out)


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, 16:] = 255
    p = save(tmp_path / "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    out = decode_image(p, 32)
    with Image.open(p) as im:
        assert np.array_equal(out, np.asarray(im.convert("RGB").convert("L")))
    assert out[:, :12].mean() < 30 and out[:, 20:].mean() > 225  # not inverted


def test_exif_rotation_is_applied(tmp_path):
    img = np.full((40, 60), 10, np.uint8)  # 60 wide, 40 high
    img[0:12, 20:30] = 250  # bright marker on the top edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    p = save(tmp_path / "rot.jpg", Image.fromarray(img), exif=exif, quality=95)
    out = decode_image(p, 40)  # 40x60 after rotation, center crop keeps rows 10..50
    with Image.open(p) as im:
        raw = im.convert("L")  # stored pixels, orientation ignored
    manual = np.asarray(raw.transpose(Image.Transpose.ROTATE_270))[10:50]  # 90 degrees clockwise
    assert np.array_equal(out, manual)
    # clockwise: the top edge lands on the right, rows 20..30 -> crop rows 10..20
    assert out[10:20, 30:40].mean() > 200 and out[25:, :].mean() < 50


def test_odd_size_and_tiny(tmp_path):
    p = save(tmp_path / "odd.png", Image.fromarray(ramp(80, 100)))
    out = decode_image(p, 128)
    assert out.shape == (128, 128) and out.dtype == np.uint8
    tiny = save(tmp_path / "tiny.png", Image.new("L", (1, 1)))
    with pytest.raises(BadImage, match="too small: 1x1"):
        decode_image(tiny)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"hello, this is not an image\n", "not an image"),
])
def test_non_images(tmp_path, content, reason):
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        decode_image(p)


def test_truncated_png(tmp_path):
    p = save(tmp_path / "t.png", Image.fromarray(ramp(64, 64)))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(BadImage):
        decode_image(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("w, h", [(30000, 30000), (9000, 8000)])  # PIL's own limit / ours (64 M)
def test_decompression_bomb_header_is_never_decoded(tmp_path, w, h):
    p = png_with_header(tmp_path / "bomb.png", w, h)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadImage, match="decompression-bomb"):
        decode_image(p)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000  # decoding would need w*h bytes (> 60 MB)


# ----------------------------------------------------------------------------- scanning
def test_find_images_layouts(tmp_path):
    root = tmp_path / "faces"
    for i in range(3):  # FFHQ thumbnails layout
        gray(root / "00000" / f"{i:05d}.png", seed=i)
    (root / "LICENSE.txt").write_text("CC")
    (root / "README.md").write_text("x")
    gray(root / "person_b" / "deep" / "X.PGM")  # per-person subfolders, upper-case extension
    (root / ".hidden.png").write_bytes(b"junk")
    gray(root / ".git" / "a.png")
    paths, skipped = find_images(root)
    rel = [p.relative_to(root).as_posix() for p in paths]
    assert rel == ["00000/00000.png", "00000/00001.png", "00000/00002.png", "person_b/deep/X.PGM"]
    assert skipped == []


def test_symlink_loop_and_links(tmp_path):
    root = tmp_path / "faces"
    gray(root / "a" / "1.png")
    os.symlink(root / "a", root / "a" / "loop")
    os.symlink(root / "a" / "1.png", root / "link.png")
    os.symlink(root / "missing.png", root / "broken.png")
    paths, skipped = find_images(root)
    assert [p.relative_to(root).as_posix() for p in paths] == ["a/1.png", "link.png"]
    reasons = {s.path: s.reason for s in skipped}
    assert "loop" in reasons["a/loop"] and "broken" in reasons["broken.png"]


def test_non_utf8_file_name(tmp_path):
    root = tmp_path / "faces"
    gray(root / "ok.png")
    try:
        with open(os.path.join(os.fsencode(root), b"bad\xff.png"), "wb") as f:
            f.write(b"x")
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    paths, skipped = find_images(root)
    assert len(paths) == 1 and skipped[0].reason == "file name is not valid UTF-8"
    fs, _ = quiet_load(root, tmp_path, size=16)  # the name also survives the cache JSON
    assert fs.files == ["ok.png"]


# ----------------------------------------------------------------------------- loading
def make_mixed_folder(root: Path) -> list[str]:
    """A folder of good images of every kind plus bad files; returns the good names, sorted."""
    rgb = ramp(40, 40)
    save(root / "a_rgb.png", Image.fromarray(rgb))
    save(root / "b_rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA"))
    save(root / "c_pal.gif", Image.fromarray(rgb).quantize(8))  # .gif is not an image extension here
    save(root / "c_pal.png", Image.fromarray(rgb).quantize(8))
    save(root / "d_16.png", Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)))
    save(root / "e_odd.jpg", Image.fromarray(ramp(80, 100)))
    save(root / "f_cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    save(root / "sub" / "g.pgm", Image.fromarray(ramp(50, 50)[..., 1]))
    save(root / "x_tiny.png", Image.new("L", (1, 1)))
    (root / "x_empty.png").write_bytes(b"")
    (root / "x_text.png").write_text("not a png")
    trunc = save(root / "x_trunc.png", Image.fromarray(ramp(64, 64)))
    trunc.write_bytes(trunc.read_bytes()[:200])
    png_with_header(root / "x_bomb.png", 30000, 30000)
    return ["a_rgb.png", "b_rgba.png", "c_pal.png", "d_16.png", "e_odd.jpg", "f_cmyk.jpg", "sub/g.pgm"]


def test_load_skips_bad_files_with_one_warning(tmp_path):
    root = tmp_path / "faces"
    good = make_mixed_folder(root)
    before = snapshot(root)
    fs, warns = quiet_load(root, tmp_path, size=32)
    assert snapshot(root) == before  # nothing written, touched or renamed in the image folder
    assert fs.files == good
    assert fs.images.shape == (len(good), 32, 32) and fs.images.dtype == np.uint8
    for i, name in enumerate(good):
        assert np.array_equal(fs.images[i], decode_image(root / name, 32))
    assert len(warns) == 1
    msg = str(warns[0].message)
    assert "skipped 5 bad files" in msg and "x_bomb.png" in msg and "\n" not in msg
    reasons = {s.path: s.reason for s in fs.skipped}
    assert set(reasons) == {"x_bomb.png", "x_empty.png", "x_text.png", "x_tiny.png", "x_trunc.png"}
    assert "decompression-bomb" in reasons["x_bomb.png"] and "empty" in reasons["x_empty.png"]
    assert fs.source == "folder" and fs.root == str(root)
    # again from the cache: same array, same skips, same single warning
    fs2, warns2 = quiet_load(root, tmp_path, size=32)
    assert np.array_equal(fs2.images, fs.images) and len(warns2) == 1
    assert [s.path for s in fs2.skipped] == [s.path for s in fs.skipped]
    assert snapshot(root) == before


def test_one_bad_file_is_singular_and_listed_next_to_the_cache(tmp_path):
    root = tmp_path / "faces"
    gray(root / "a.png")
    gray(root / "b.png")
    (root / "c.png").write_bytes(b"")
    before = snapshot(root)
    fs, warns = quiet_load(root, tmp_path, size=16)
    assert len(warns) == 1
    msg = str(warns[0].message)
    assert msg.startswith(f"skipped 1 bad file in {root}: c.png (") and "files" not in msg.split(":")[0]
    assert "FaceSet" not in msg and "--strict" in msg
    listed = sorted((tmp_path / "cache").glob("*skipped.txt"))
    assert len(listed) == 1 and str(listed[0]) in msg  # a file the user can open, next to the decode cache
    assert listed[0].read_text().splitlines() == [f"{root / 'c.png'}\t{fs.skipped[0].reason}"]
    assert snapshot(root) == before  # never inside the user's image folder


def test_strict_mode_names_the_file(tmp_path):
    root = tmp_path / "faces"
    gray(root / "a.png")
    (root / "b.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"b\.png.*empty"):
        load_images(root, 16, strict=True, cache_dir=tmp_path / "c", progress=False)


def test_missing_and_empty_folders(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as e:
        load_images(missing, cache_dir=tmp_path / "c", progress=False)
    assert str(missing) in str(e.value) and "python -m src data sample" in str(e.value)
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no image files") as e:
        load_images(empty, cache_dir=tmp_path / "c", progress=False)
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    (empty / "bad.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"no readable images.*1 files skipped"):
        quiet_load(empty, tmp_path)


def test_cache_inside_root_is_refused(tmp_path):
    gray(tmp_path / "a.png")
    with pytest.raises(UserError, match="inside the image folder"):
        load_images(tmp_path, 16, cache_dir=tmp_path / "cache", progress=False)


def test_limit_takes_first_sorted(tmp_path):
    root = tmp_path / "faces"
    for name in ("c.png", "a.png", "b.png", "d.png"):
        gray(root / name)
    fs, _ = quiet_load(root, tmp_path, size=16, limit=2)
    assert fs.files == ["a.png", "b.png"] and fs.images.shape == (2, 16, 16)


# ----------------------------------------------------------------------------- cache
@pytest.fixture
def counted(monkeypatch):
    """Count decode_image calls (serial path: fewer than PARALLEL_MIN files)."""
    calls = []
    real = decode.decode_image

    def spy(path, size=128):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(decode, "decode_image", spy)  # the one the decode job calls
    return calls


def test_cache_hit_reuses_without_decoding(tmp_path, counted, monkeypatch):
    root = tmp_path / "faces"
    for i in range(4):
        gray(root / f"{i}.png", seed=i)
    fs, _ = quiet_load(root, tmp_path, size=16)
    assert len(counted) == 4

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(decode, "decode_image", boom)
    fs2, warns = quiet_load(root, tmp_path, size=16)
    assert np.array_equal(fs2.images, fs.images) and fs2.files == fs.files and not warns
    assert isinstance(fs2.images, np.memmap) and not fs2.images.flags.writeable


def test_cache_invalidation(tmp_path, counted):
    root = tmp_path / "faces"
    for i in range(3):
        gray(root / f"{i}.png", seed=i)
    quiet_load(root, tmp_path, size=16)
    n = len(counted)
    gray(root / "3.png", seed=3)  # a file added
    fs, _ = quiet_load(root, tmp_path, size=16)
    assert len(counted) > n and len(fs.files) == 4
    n = len(counted)
    (root / "0.png").unlink()  # a file removed
    fs, _ = quiet_load(root, tmp_path, size=16)
    assert len(counted) > n and fs.files == ["1.png", "2.png", "3.png"]
    n = len(counted)
    fs, _ = quiet_load(root, tmp_path, size=24)  # another size
    assert len(counted) > n and fs.images.shape == (3, 24, 24)
    n = len(counted)
    gray(root / "1.png", seed=9)  # a file rewritten (size/mtime change)
    os.utime(root / "1.png", ns=(1, 1))
    fs, _ = quiet_load(root, tmp_path, size=24)
    assert len(counted) > n and np.array_equal(fs.images[0], decode_image(root / "1.png", 24))


@pytest.mark.parametrize("damage", ["truncate_npy", "garble_json", "flip_byte", "delete_npy"])
def test_corrupt_cache_warns_and_rebuilds(tmp_path, damage):
    root = tmp_path / "faces"
    for i in range(3):
        gray(root / f"{i}.png", seed=i)
    fs, _ = quiet_load(root, tmp_path, size=16)
    expect = np.array(fs.images)
    del fs
    npy = next((tmp_path / "cache").glob("*.npy"))
    meta = npy.with_suffix(".json")
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:300])
    elif damage == "garble_json":
        meta.write_text(meta.read_text()[:25])
    elif damage == "flip_byte":
        b = bytearray(npy.read_bytes())
        b[-1] ^= 0xFF
        npy.write_bytes(bytes(b))
    else:
        npy.unlink()
    fs, warns = quiet_load(root, tmp_path, size=16)
    assert len(warns) == 1 and "is corrupt" in str(warns[0].message) and "rebuilding" in str(warns[0].message)
    assert np.array_equal(fs.images, expect)
    fs, warns = quiet_load(root, tmp_path, size=16)  # rebuilt cache is healthy again
    assert not warns and np.array_equal(fs.images, expect)


def test_parallel_decode_matches_serial(tmp_path):
    root = tmp_path / "faces"
    for i in range(PARALLEL_MIN + 6):
        gray(root / f"{i:03d}.png", seed=i)
    (root / "zz_bad.png").write_bytes(b"")
    par, w1 = quiet_load(root, tmp_path, size=16, workers=2, cache_dir=tmp_path / "c1")
    ser, w2 = quiet_load(root, tmp_path, size=16, workers=1, cache_dir=tmp_path / "c2")
    assert par.files == ser.files and np.array_equal(par.images, ser.images)
    assert len(w1) == len(w2) == 1 and par.skipped == ser.skipped


MAIN_THAT_MARKS_ITS_IMPORTS = """
import os, sys
if __name__ != "__main__":  # a decode worker running this script again
    open(os.path.join(sys.argv[3], f"imported-by-{os.getpid()}"), "w").close()
from src.data import load_images
if __name__ == "__main__":
    print(len(load_images(sys.argv[1], 16, cache_dir=sys.argv[2], workers=2, progress=False).files))
"""


def test_decode_workers_do_not_run_the_callers_main_again(tmp_path):
    # A main that imports torch (the benchmark, a notebook) cost each worker 1-2 s when they re-imported it.
    import subprocess

    root, marks = tmp_path / "faces", tmp_path / "marks"
    marks.mkdir()
    for i in range(PARALLEL_MIN + 6):
        gray(root / f"{i:03d}.png", seed=i)
    script = tmp_path / "main.py"
    script.write_text(MAIN_THAT_MARKS_ITS_IMPORTS)
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "cache"), str(marks)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(PARALLEL_MIN + 6)]
    assert list(marks.iterdir()) == []


# ----------------------------------------------------------------------------- resolve
def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = []
    made = []

    def fake_write_sample(out_dir, n=2000, seed=0, size=128, progress=True, workers=1):
        made.append(n)
        for i in range(n):
            gray(Path(out_dir) / "00000" / f"{i:05d}.png", seed=i)
        (Path(out_dir) / "SAMPLE.json").write_text(f'{{"n": {n}}}')

    monkeypatch.setitem(sys.modules, "src.sample", types.SimpleNamespace(write_sample=fake_write_sample))
    cfg = DataConfig(sample_size=5, cache_dir=str(tmp_path / "cache"))
    fs = data.load_dataset(cfg, progress=False, log=logs.append)
    assert made == [5] and fs.source == "sample" and len(fs.files) == 5
    assert len(logs) == 1 and "data/sample" in logs[-1]
    data.load_dataset(cfg, progress=False, log=logs.append)
    assert made == [5] and len(logs) == 2  # a complete sample is reused
    fs = data.load_dataset(DataConfig(sample_size=7, cache_dir=cfg.cache_dir), progress=False, log=logs.append)
    assert made == [5, 7] and len(fs.files) == 7  # another sample_size regenerates
    gray(tmp_path / "data" / "flickr" / "00000" / "00000.png")
    root, source = data.resolve_data_dir(cfg, log=logs.append)
    assert (root, source) == (data.REAL_DIR, "real") and "data/flickr" in logs[-1]
    assert data.resolve_data_dir(DataConfig(root="data/sample"), log=logs.append)[1] == "sample"
    assert data.resolve_data_dir(DataConfig(root="elsewhere"), log=logs.append) == (Path("elsewhere"), "folder")


def test_load_images_works_from_a_script_on_standard_input(tmp_path):
    """``python - <<EOF``: the decode pool's forkserver children cannot re-import a ``__main__`` read from
    stdin (its file is "<stdin>"), so the pool must not be used there; the images must still all load."""
    import subprocess

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = PARALLEL_MIN + 6  # enough files for the process pool
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{k:03d}.png")
    script = (f"from src.data import load_images\n"
              f"fs = load_images({str(folder)!r}, 16, cache_dir={str(tmp_path / 'cache')!r}, workers=2, progress=False)\n"
              f"print(fs.images.shape, int(fs.images[5].sum()))\n")
    p = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr[-2000:]
    expected = int(np.asarray(Image.open(folder / "005.png")).astype(np.int64).sum())  # 16x16 gray: decoded as is
    assert p.stdout.split() == [f"({n},", "16,", "16)", str(expected)]
