"""Tests for the procedural face generator and its on-disk sample (src/synthetic.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src import data, sample, synthetic
from src.imagestats import KEYS, TARGET_BANDS, format_table, image_stats
from src.sample import sample_path, write_sample
from src.synthetic import GENERATOR_VERSION, face, generate, render_face
from src.utils import UserError


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """1,000 faces of seed 0, uint8 (1000, 128, 128); shared by the slow-ish checks (~3 s)."""
    return generate(1000, seed=0)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, keyed by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shapes_dtype_and_value_range():
    img = render_face(np.random.default_rng(0))
    assert img.shape == (128, 128) and img.dtype == np.uint8
    assert render_face(np.random.default_rng(0), size=64).shape == (64, 64)
    x = generate(16, seed=1)
    assert x.shape == (16, 128, 128) and x.dtype == np.uint8
    f = x.astype(np.float32) / 255
    assert 0.3 < f.mean() < 0.6
    assert (f.std(axis=(1, 2)) > 0.05).all()  # every image has contrast
    saturated = ((x == 0) | (x == 255)).mean()
    assert saturated < 0.05


def test_same_seed_same_faces_other_seed_other_faces():
    a, b = generate(4, seed=3), generate(4, seed=3)
    np.testing.assert_array_equal(a, b)
    c = generate(4, seed=4)
    assert all((a[i] != c[i]).mean() > 0.5 for i in range(4))


def test_face_is_independent_of_n_and_order():
    x = generate(6, seed=2)
    for i in (5, 0, 3):
        np.testing.assert_array_equal(face(i, seed=2), x[i])
    np.testing.assert_array_equal(generate(3, seed=2), x[:3])


def test_sample_path_follows_ffhq_layout(tmp_path):
    assert sample_path(tmp_path, 0) == tmp_path / "00000" / "00000.png"
    assert sample_path(tmp_path, 999) == tmp_path / "00000" / "00999.png"
    assert sample_path(tmp_path, 1000) == tmp_path / "01000" / "01000.png"
    assert sample_path(tmp_path, 69999) == tmp_path / "69000" / "69999.png"


def test_write_sample_is_lossless_byte_identical_and_marked(tmp_path):
    paths = write_sample(tmp_path / "a", n=5, seed=7, progress=False)
    assert paths == [tmp_path / "a" / "00000" / f"{i:05d}.png" for i in range(5)]
    expected = generate(5, seed=7)
    for p, arr in zip(paths, expected):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), arr)
    marker = json.loads((tmp_path / "a" / "SAMPLE.json").read_text())
    assert marker == {"generator": "src.synthetic", "version": GENERATOR_VERSION, "n": 5, "seed": 7, "size": 128}
    write_sample(tmp_path / "b", n=5, seed=7, progress=False)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert sorted(_tree(tmp_path / "a")) == ["00000/0000%d.png" % i for i in range(5)] + ["SAMPLE.json"]


def test_write_sample_is_idempotent(tmp_path):
    paths = write_sample(tmp_path, n=3, progress=False)
    stamps = [p.stat().st_mtime_ns for p in paths + [tmp_path / "SAMPLE.json"]]
    assert write_sample(tmp_path, n=3, progress=False) == paths
    assert [p.stat().st_mtime_ns for p in paths + [tmp_path / "SAMPLE.json"]] == stamps


def test_write_sample_replaces_its_own_sample_with_other_parameters(tmp_path):
    write_sample(tmp_path, n=5, seed=0, progress=False)
    (tmp_path / "00000" / ".DS_Store").write_bytes(b"file browser metadata")  # tolerated, kept
    paths = write_sample(tmp_path, n=3, seed=1, progress=False)
    assert sorted(_tree(tmp_path)) == ["00000/.DS_Store", "00000/00000.png", "00000/00001.png",
                                       "00000/00002.png", "SAMPLE.json"]
    with Image.open(paths[2]) as im:
        np.testing.assert_array_equal(np.asarray(im), face(2, seed=1))


def test_parallel_workers_write_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "POOL_MIN", 1)  # a real process pool even for a few faces
    write_sample(tmp_path / "one", n=6, seed=3, progress=False, workers=1)
    write_sample(tmp_path / "two", n=6, seed=3, progress=False, workers=2)
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two") and len(_tree(tmp_path / "two")) == 7  # + SAMPLE.json


def test_write_sample_resumes_an_interrupted_run(tmp_path, monkeypatch):
    real_face = synthetic.face

    def failing_face(index: int, seed: int = 0, size: int = 128) -> np.ndarray:
        if index == 2:
            raise KeyboardInterrupt
        return real_face(index, seed, size)

    monkeypatch.setattr(sample, "face", failing_face)  # sample.py renders through its own name
    with pytest.raises(KeyboardInterrupt):
        write_sample(tmp_path / "cut", n=4, progress=False)
    assert not (tmp_path / "cut" / "SAMPLE.json").exists()  # an interrupted sample is not complete
    assert sorted(p.name for p in (tmp_path / "cut").rglob("*.png")) == ["00000.png", "00001.png"]
    done = [sample_path(tmp_path / "cut", i) for i in (0, 1)]
    stamps = [p.stat().st_mtime_ns for p in done]
    monkeypatch.setattr(sample, "face", real_face)
    write_sample(tmp_path / "cut", n=4, progress=False)
    assert [p.stat().st_mtime_ns for p in done] == stamps  # finished files are kept
    write_sample(tmp_path / "fresh", n=4, progress=False)
    assert _tree(tmp_path / "cut") == _tree(tmp_path / "fresh")


def test_an_interrupted_switch_of_parameters_never_mixes_samples(tmp_path, monkeypatch):
    write_sample(tmp_path / "s", n=4, seed=0, progress=False)
    real_face = synthetic.face

    def failing_face(index: int, seed: int = 0, size: int = 128) -> np.ndarray:
        return real_face(index, seed, size) if index < 2 else np.asarray(1 / 0)

    monkeypatch.setattr(sample, "face", failing_face)
    with pytest.raises(ZeroDivisionError):
        write_sample(tmp_path / "s", n=4, seed=1, progress=False)
    monkeypatch.setattr(sample, "face", real_face)
    write_sample(tmp_path / "s", n=4, seed=0, progress=False)  # back to the first sample
    write_sample(tmp_path / "fresh", n=4, seed=0, progress=False)
    assert _tree(tmp_path / "s") == _tree(tmp_path / "fresh")


@pytest.mark.parametrize("foreign", ["notes.txt", "00000/00000.png", "00000/cat.jpg"])
def test_write_sample_refuses_foreign_files_and_leaves_them(tmp_path, foreign):
    if foreign == "00000/cat.jpg":  # a user file slipped into a finished sample
        write_sample(tmp_path, n=2, progress=False)
    target = tmp_path / foreign
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"user data")
    before = _tree(tmp_path)
    with pytest.raises(UserError):
        write_sample(tmp_path, n=3, seed=5, progress=False)
    assert _tree(tmp_path) == before


def test_write_sample_refuses_a_file_as_folder(tmp_path):
    (tmp_path / "x").write_text("user data")
    with pytest.raises(UserError):
        write_sample(tmp_path / "x", n=1, progress=False)
    assert (tmp_path / "x").read_text() == "user data"


def test_a_generated_sample_has_the_statistics_of_face_photographs(faces):
    # issue 12 sets the bands for 2,000 faces; 1,000 keep the test fast and must meet the
    # same bands. Only the PCA figures depend on the sample size (fewer training images fit
    # a PCA that generalizes less): at 1,000 faces PCA-200 reads ~0.5 dB lower than at 2,000
    # (measured 23.2 vs 23.7 dB, band 22.5-25.0), the other statistics within ~0.2 dB / 1 %.
    stats = image_stats(faces)
    outside = [k for k in KEYS if not TARGET_BANDS[k][0] <= stats[k] <= TARGET_BANDS[k][1]]
    assert not outside, f"outside the target bands: {outside}\n" + format_table(stats, TARGET_BANDS, "target")


def test_mean_face_has_dark_eyes_between_bright_cheeks_and_bridge(faces):
    # the eyes sit ~0.1 image widths either side of the centre, just above the image
    # centre row; cheeks are ~0.1 widths lower, the nose bridge between the eyes
    m = faces.mean(axis=0) / 255
    eyes = np.r_[m[56:66, 46:54].ravel(), m[56:66, 74:82].ravel()].mean()
    cheeks = np.r_[m[72:80, 46:54].ravel(), m[72:80, 74:82].ravel()].mean()
    bridge = m[56:66, 60:68].mean()
    assert cheeks - eyes > 0.04  # measured ~0.08 (v1: ~0.12; v2 moves and scales the faces more)
    assert bridge - eyes > 0.04  # measured ~0.07 (v1: ~0.11)


def test_any_size_renders_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN or an overflow would warn
        for size in (8, 17, 64, 100, 200):
            x = generate(3, seed=5, size=size)
            assert x.shape == (3, size, size) and x.dtype == np.uint8 and (x.std(axis=(1, 2)) > 5).all()


def test_faces_do_not_depend_on_numpy_simd_kernels():
    # numpy picks SIMD kernels per CPU at run time; a child process with all of the optional
    # ones switched off must still draw byte-identical faces (only exactly rounded ops)
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    off = " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f))
    code = "import sys, src.synthetic as s; sys.stdout.buffer.write(s.generate(12, seed=4).tobytes())"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": off}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env,
                         cwd=Path(synthetic.__file__).parents[1]).stdout
    assert out == generate(12, seed=4).tobytes()


def test_a_sample_of_an_older_generator_is_regenerated_not_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resolve_data_dir uses ./data/sample
    sample = tmp_path / "data" / "sample"
    write_sample(sample, n=5, progress=False)
    old = {"generator": "src.synthetic", "n": 5, "seed": 0, "size": 128}  # what version 1 wrote
    (sample / "SAMPLE.json").write_text(json.dumps(old))
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(sample_path(sample, 3))  # an "old" face
    logs = []
    root, source = data.resolve_data_dir(data.DataConfig(sample_size=5), log=logs.append)
    assert (root, source) == (Path("data/sample"), "sample")
    assert "generator v1" in logs[-1] and f"generator v{GENERATOR_VERSION}" in logs[-1]
    write_sample(tmp_path / "fresh", n=5, progress=False)
    assert _tree(sample) == _tree(tmp_path / "fresh")
    data.resolve_data_dir(data.DataConfig(sample_size=5), log=logs.append)
    assert "generating" not in logs[-1]  # now current: reused as it is


def test_an_older_sample_with_user_files_is_never_deleted(tmp_path):
    write_sample(tmp_path, n=2, progress=False)
    (tmp_path / "SAMPLE.json").write_text(json.dumps({"generator": "src.synthetic", "n": 2, "seed": 0, "size": 128}))
    (tmp_path / "00000" / "my_photo.jpg").write_bytes(b"user data")
    before = _tree(tmp_path)
    with pytest.raises(UserError, match="my_photo.jpg"):
        write_sample(tmp_path, n=2, progress=False)
    assert _tree(tmp_path) == before


@pytest.mark.slow
def test_at_least_300_faces_per_second_on_one_core():
    import time

    generate(20)  # warm caches
    start = time.process_time()  # CPU time: other processes on the machine do not count
    generate(600)
    assert 600 / (time.process_time() - start) >= 300
