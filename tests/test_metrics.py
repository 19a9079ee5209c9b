"""Metrics: hand-computed cases, known properties, masks, bad input, and SSIM against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cbct.metrics import psnr, rmse, ssim, ssim_map


def test_rmse_and_psnr_hand_computed():
    ref = np.zeros((2, 2), np.float32)
    x = np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)  # MSE = 0.5
    assert rmse(x, ref) == pytest.approx(math.sqrt(0.5))
    assert psnr(x, ref, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.5))
    assert psnr(ref, ref, data_range=1.0) == math.inf
    assert rmse(ref, ref) == 0.0


def test_mask_restricts_the_average():
    ref = np.zeros((3, 4, 4))
    x = ref.copy()
    x[:, 0, 0] = 3.0  # error outside the disc-like mask below
    x[:, 2, 2] = 1.0  # error inside it
    mask2d = np.zeros((4, 4), bool)
    mask2d[1:3, 1:3] = True
    assert rmse(x, ref, mask=mask2d) == pytest.approx(math.sqrt(1 / 4))  # broadcast over z
    assert rmse(x, ref, mask=np.broadcast_to(mask2d, x.shape).copy()) == pytest.approx(0.5)
    assert psnr(x, ref, data_range=1.0, mask=mask2d) == pytest.approx(10 * math.log10(4))
    assert rmse(x, ref) == pytest.approx(math.sqrt((9 + 1) / 16))


def test_ssim_identical_is_one_and_degrades_with_noise():
    rng = np.random.default_rng(0)
    ref = rng.random((4, 32, 32)).astype(np.float32)
    assert ssim(ref, ref, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert ssim(ref, ref, data_range=1.0, spatial_dims=3) == pytest.approx(1.0, abs=1e-12)
    small = ssim(ref + 0.01 * rng.standard_normal(ref.shape), ref, data_range=1.0)
    large = ssim(ref + 0.2 * rng.standard_normal(ref.shape), ref, data_range=1.0)
    assert 1.0 > small > large > 0.0


def test_ssim_of_constant_images_is_the_luminance_term():
    # flat images: zero variance, so SSIM = (2ab + C1) / (a² + b² + C1) exactly
    a, b, dr = 0.3, 0.5, 1.0
    c1 = (0.01 * dr) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(np.full((16, 16), a), np.full((16, 16), b), data_range=dr)
    assert got == pytest.approx(expected, rel=1e-9)


def test_ssim_per_slice_is_the_mean_of_2d_slices():
    rng = np.random.default_rng(1)
    ref = rng.random((3, 24, 24))
    x = ref + 0.1 * rng.standard_normal(ref.shape)
    per_slice = [ssim(x[k], ref[k], data_range=1.0) for k in range(3)]
    assert ssim(x, ref, data_range=1.0) == pytest.approx(np.mean(per_slice), rel=1e-12)
    assert ssim(x, ref, data_range=1.0, spatial_dims=3) != pytest.approx(np.mean(per_slice), rel=1e-6)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    ref = np.cumsum(rng.random((40, 48)), axis=1)
    x = ref + 0.5 * rng.standard_normal(ref.shape)
    dr = float(ref.max() - ref.min())
    _, smap_ref = structural_similarity(
        x, ref, data_range=dr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    np.testing.assert_allclose(ssim_map(x, ref, data_range=dr), smap_ref, rtol=1e-7, atol=1e-9)
    vol_ref = rng.random((12, 20, 20))
    vol_x = vol_ref + 0.1 * rng.standard_normal(vol_ref.shape)
    _, smap3 = structural_similarity(
        vol_x, vol_ref, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    np.testing.assert_allclose(ssim_map(vol_x, vol_ref, data_range=1.0, spatial_dims=3), smap3, rtol=1e-7, atol=1e-9)


def test_ssim_mask():
    rng = np.random.default_rng(3)
    ref = rng.random((2, 20, 20))
    x = ref.copy()
    x[:, :, :5] += rng.standard_normal((2, 20, 5))  # damage far from the mask
    mask = np.zeros((20, 20), bool)
    mask[:, 14:] = True
    assert ssim(x, ref, data_range=1.0, mask=mask) == pytest.approx(1.0, abs=1e-9)
    assert ssim(x, ref, data_range=1.0) < 0.9


def test_torch_tensors_are_accepted():
    import torch
    ref = torch.linspace(0, 1, 64).reshape(8, 8)
    x = ref + 0.1
    assert rmse(x, ref) == pytest.approx(0.1, rel=1e-5)
    assert psnr(x, ref, data_range=1.0) == pytest.approx(20.0, rel=1e-5)
    assert ssim(x, ref, data_range=1.0) == pytest.approx(ssim(x.numpy(), ref.numpy(), data_range=1.0))


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: psnr(np.zeros(3), np.zeros(4), data_range=1.0), ValueError, "same shape"),
        (lambda: psnr(np.zeros(3), np.zeros(3), data_range=0.0), ValueError, "data_range"),
        (lambda: psnr(np.zeros(3), np.zeros(3), data_range=None), TypeError, "data_range"),
        (lambda: rmse(np.array([np.nan, 0.0]), np.zeros(2)), ValueError, "x contains 1 NaN"),
        (lambda: rmse(np.zeros(2), np.array([np.inf, 0.0])), ValueError, "ref contains"),
        (lambda: rmse(np.zeros(2), np.zeros(2), mask=np.zeros(2, bool)), ValueError, "no voxels"),
        (lambda: rmse(np.zeros(2), np.zeros(2), mask=np.ones(2)), TypeError, "boolean"),
        (lambda: rmse(np.zeros((2, 3)), np.zeros((2, 3)), mask=np.ones(2, bool)), ValueError, "broadcast"),
        (lambda: ssim(np.zeros((4, 4)), np.zeros((4, 4)), data_range=1.0, spatial_dims=3), ValueError, "spatial_dims"),
        (lambda: ssim(np.zeros((4, 4)), np.zeros((4, 4)), data_range=1.0, spatial_dims=1), ValueError, "spatial_dims"),
        (lambda: ssim(np.zeros((4, 4)), np.zeros((4, 4)), data_range=1.0, sigma=0), ValueError, "sigma"),
    ],
)
def test_bad_input_raises_clearly(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_data_range_is_required():
    with pytest.raises(TypeError):
        psnr(np.zeros(3), np.zeros(3))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ssim(np.zeros((4, 4)), np.zeros((4, 4)))  # type: ignore[call-arg]
