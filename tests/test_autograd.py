"""Differentiable projector and adjoint (cbct.autograd): gradcheck on the CPU in float64, batches, errors; the
CUDA path (DLPack, no copies) on a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
import cbct.autograd as ca

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_numba_thread")


@pytest.fixture
def tiny_geometry() -> cbct.ConeGeometry:
    """Non-cubic volume so that axis mix-ups show: 5 x 6 x 7 voxels, 3 views of 6 x 8 pixels."""
    return cbct.ConeGeometry.circular(
        dso=40.0, dsd=60.0, detector_shape=(6, 8), detector_pixel_size=1.5, volume_shape=(5, 6, 7),
        voxel_size=(1.0, 0.9, 1.1), angles=np.array([0.3, 1.4, 2.9]),
    )


def test_gradcheck_project_and_backproject_cpu_float64(tiny_geometry):
    gen = torch.Generator().manual_seed(0)
    volume = torch.rand(tiny_geometry.volume.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    projections = torch.rand(tiny_geometry.projection_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ca.project(v, tiny_geometry), (volume,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda p: ca.backproject(p, tiny_geometry), (projections,), eps=1e-6, atol=1e-7,
                                    rtol=1e-5)


def test_gradgradcheck_project_cpu_float64(tiny_geometry):
    volume = torch.rand(tiny_geometry.volume.shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda v: ca.project(v, tiny_geometry), (volume,), eps=1e-6, atol=1e-7,
                                        rtol=1e-5)


def test_values_match_the_operators_and_batches(tiny_geometry, rng):
    volume = rng.random((2, *tiny_geometry.volume.shape)).astype(np.float32)
    out = ca.project(torch.from_numpy(volume), tiny_geometry)
    assert out.shape == (2, *tiny_geometry.projection_shape) and out.dtype == torch.float32
    np.testing.assert_allclose(out[1].numpy(), cbct.project(volume[1], tiny_geometry), rtol=1e-6, atol=1e-6)
    proj = rng.random(tiny_geometry.projection_shape).astype(np.float32)
    back = ca.backproject(torch.from_numpy(proj), tiny_geometry)
    np.testing.assert_allclose(back.numpy(), cbct.backproject(proj, tiny_geometry, "matched"), rtol=1e-6, atol=1e-6)


def test_backward_is_the_adjoint(tiny_geometry, rng):
    volume = torch.from_numpy(rng.random(tiny_geometry.volume.shape)).requires_grad_()
    weights = torch.from_numpy(rng.random(tiny_geometry.projection_shape))
    (ca.project(volume, tiny_geometry) * weights).sum().backward()
    expected = cbct.backproject(weights.numpy(), tiny_geometry, "matched")
    np.testing.assert_allclose(volume.grad.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_errors_name_the_argument(tiny_geometry):
    with pytest.raises(ValueError, match="volume must have shape"):
        ca.project(torch.zeros(4, 6, 7), tiny_geometry)
    with pytest.raises(TypeError, match="projections must be float32"):
        ca.backproject(torch.zeros(tiny_geometry.projection_shape, dtype=torch.int32), tiny_geometry)
    with pytest.raises(TypeError, match="volume must be a torch.Tensor"):
        ca.project(np.zeros(tiny_geometry.volume.shape), tiny_geometry)
    with pytest.raises(TypeError, match="geom must be a cbct.ConeGeometry"):
        ca.project(torch.zeros(tiny_geometry.volume.shape), "geometry")


def test_import_cbct_does_not_import_torch_or_cupy():
    import subprocess
    import sys

    code = "import sys, cbct, cbct.autograd, cbct.cuda, cbct.cuda.kernels, cbct.cuda.memory; " \
           "print('torch' in sys.modules, 'cupy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.gpu
def test_cuda_tensors_zero_copy_and_match_cpu(tiny_geometry, rng):
    volume = rng.random((2, *tiny_geometry.volume.shape)).astype(np.float32)
    cuda_volume = torch.from_numpy(volume).cuda().requires_grad_()
    assert ca.to_cupy(cuda_volume).data.ptr == cuda_volume.data_ptr()  # DLPack: a view, not a copy
    out = ca.project(cuda_volume, tiny_geometry)
    assert out.is_cuda and out.shape == (2, *tiny_geometry.projection_shape)
    expected = cbct.project(volume.astype(np.float64), tiny_geometry)
    np.testing.assert_allclose(out.detach().cpu().numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    weights = torch.from_numpy(rng.random(out.shape).astype(np.float32)).cuda()
    (out * weights).sum().backward()
    grad_cpu = cbct.backproject(weights.cpu().numpy().astype(np.float64), tiny_geometry, "matched")
    np.testing.assert_allclose(cuda_volume.grad.cpu().numpy(), grad_cpu, rtol=1e-4, atol=1e-5 * np.abs(grad_cpu).max())


@pytest.mark.gpu
def test_cuda_adjoint_dot_product(small_geometry, rng):
    x = torch.from_numpy(rng.random(small_geometry.volume.shape).astype(np.float32)).cuda()
    y = torch.from_numpy(rng.random(small_geometry.projection_shape).astype(np.float32)).cuda()
    lhs = float((ca.project(x, small_geometry).double() * y.double()).sum())
    rhs = float((x.double() * ca.backproject(y, small_geometry).double()).sum())
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
