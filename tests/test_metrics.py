"""Metrics against scikit-image, the reference definitions (data_range = 1.0)."""
import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from src import metrics


def _pairs(rng, n=6, size=32):
    a = rng.random((n, size, size))
    b = np.clip(a + rng.normal(0, rng.uniform(0.01, 0.3, (n, 1, 1)), a.shape), 0, 1)
    return a.astype(np.float32), b.astype(np.float32)


def _smooth_images(rng, n=4, size=128):
    """Face-like smooth images with structure (not white noise), plus a distorted copy."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 3)
        img = 0.3 + 0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.05 * r + 0.01))
        img += 0.1 * np.sin(xx * rng.uniform(5, 30)) * np.cos(yy * rng.uniform(5, 30))
        out.append(np.clip(img, 0, 1))
    a = np.stack(out).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    return a, b


@pytest.mark.parametrize("make", [_pairs, _smooth_images])
def test_ssim_psnr_mse_equal_skimage_per_image(make):
    rng = np.random.default_rng(0)
    a, b = make(rng)
    ours = metrics.all_metrics(torch.from_numpy(b)[:, None], torch.from_numpy(a)[:, None])
    for i in range(len(a)):
        ref_ssim = structural_similarity(a[i].astype(np.float64), b[i].astype(np.float64), data_range=1.0)
        ref_psnr = peak_signal_noise_ratio(a[i].astype(np.float64), b[i].astype(np.float64), data_range=1.0)
        ref_mse = mean_squared_error(a[i].astype(np.float64), b[i].astype(np.float64))
        assert abs(float(ours["ssim"][i]) - ref_ssim) < 1e-5
        assert abs(float(ours["psnr"][i]) - ref_psnr) < 1e-4
        assert abs(float(ours["mse"][i]) - ref_mse) < 1e-7


def test_ssim_on_generated_faces_equals_skimage():
    from src import synthetic

    faces = synthetic.generate(4, seed=3).astype(np.float32) / 255
    noisy = np.clip(faces + np.random.default_rng(1).normal(0, 0.1, faces.shape), 0, 1).astype(np.float32)
    ours = metrics.ssim(torch.from_numpy(noisy), torch.from_numpy(faces))
    for i in range(4):
        ref = structural_similarity(faces[i].astype(np.float64), noisy[i].astype(np.float64), data_range=1.0)
        assert abs(float(ours[i]) - ref) < 1e-5


def test_identical_images_are_perfect():
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3))
    assert torch.all(metrics.mse(x, x) == 0)
    assert torch.all(torch.isinf(metrics.psnr(x, x)))


def test_psnr_uses_data_range_one_not_image_range():
    # A dim reconstruction (range 0..0.5) must be scored against data_range 1, the original bug used max-min.
    x = torch.full((1, 1, 8, 8), 0.25)
    y = torch.full((1, 1, 8, 8), 0.35)
    assert float(metrics.psnr(x, y)) == pytest.approx(10 * np.log10(1 / 0.01), abs=1e-3)


def test_metrics_are_per_image_not_pooled():
    x = torch.zeros(2, 1, 8, 8)
    y = torch.zeros(2, 1, 8, 8)
    y[1] += 0.1
    assert metrics.mse(x, y).tolist() == pytest.approx([0.0, 0.01])


@pytest.mark.parametrize("n, shape", [(7, (40, 52)), (1, (16, 16)), (5, (7, 9))])
def test_ssim_over_cpu_tasks_equals_skimage_for_any_batch_and_shape(n, shape):
    # 7 images: tasks of SSIM_CPU_CHUNK with a short last one; non-square and minimal (7-pixel) sides.
    rng = np.random.default_rng(n)
    a = rng.random((n, *shape)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ours = metrics.ssim(torch.from_numpy(b), torch.from_numpy(a))
    ref = [structural_similarity(a[i].astype(np.float64), b[i].astype(np.float64), data_range=1.0) for i in range(n)]
    assert ours.shape == (n,)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)


def test_ssim_is_the_same_at_any_thread_count_and_leaves_the_count_alone():
    # Every task runs on one intra-op thread, so 1 and 2 threads give the same bits.
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.random((9, 1, 24, 24)).astype(np.float32))
    y = (x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))).clamp(0, 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = metrics.ssim(y, x)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = metrics.ssim(y, x)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
