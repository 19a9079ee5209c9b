"""cbct.tigre: Ax / Atb in TIGRE's shapes, units and scaling; FDK; the demo utilities; the GPU path (emulated)."""

from __future__ import annotations

import numpy as np
import pytest

import cbct
import cbct.tigre as tigre
import cbct.tigre.algorithms as algs
from cbct.phantoms.ellipsoids import Ellipsoid, line_integrals
from cbct.tigre.utilities import CTnoise, sample_loader


def small_geo(n=24, det=(31, 41), pixel=1.0):
    geo = tigre.geometry()
    geo.DSD, geo.DSO = 600.0, 400.0
    geo.nDetector = np.array(det)
    geo.dDetector = np.array([pixel, pixel])
    geo.sDetector = geo.nDetector * geo.dDetector
    geo.nVoxel = np.array([n, n, n])
    geo.dVoxel = np.array([1.0, 1.0, 1.0])
    geo.sVoxel = geo.nVoxel * geo.dVoxel
    return geo


def test_ax_shape_units_and_orientation():
    geo = small_geo()
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ones = np.ones(tuple(geo.nVoxel), np.float32)
    proj = tigre.Ax(ones, geo, angles)
    assert proj.shape == (12, 31, 41) and proj.dtype == np.float32
    assert proj[0, 15, 20] == pytest.approx(24.0, rel=1e-4)  # central ray crosses 24 mm of unit attenuation
    # a small blob above the centre (+z) and towards +y: at angle 0 it lands right of centre (+u) and above the
    # middle row, i.e. at a *higher* row index (TIGRE's row 0 is the bottom of the detector)
    vol = np.zeros(tuple(geo.nVoxel), np.float32)
    vol[12 + 6, 12 + 5, 12] = 1.0  # z = +6.5 mm, y = +5.5 mm from the centre (voxel centres at k - 11.5)
    p0 = tigre.Ax(vol, geo, angles[:1])[0]
    iv, iu = np.unravel_index(np.argmax(p0), p0.shape)
    mag = 600.0 / 400.0
    assert iu == pytest.approx(20 + 5.5 * mag, abs=1) and iv == pytest.approx(15 + 6.5 * mag, abs=1)


def test_atb_fdk_weights_and_matched_adjoint(rng):
    geo = small_geo()
    geo.offDetector = np.array([1.5, -2.0])
    geo.COR = 0.4
    geo.rotDetector = np.array([0.01, 0.02, -0.03])
    angles = np.stack([np.linspace(0, 2 * np.pi, 10, endpoint=False), np.full(10, 0.05), np.zeros(10)], 1)
    x = rng.random(tuple(geo.nVoxel)).astype(np.float32)
    y = rng.random((10, 31, 41)).astype(np.float32)
    lhs = float(np.vdot(tigre.Ax(x, geo, angles).astype(np.float64), y))
    rhs = float(np.vdot(x.astype(np.float64), tigre.Atb(y, geo, angles, "matched")))
    assert lhs == pytest.approx(rhs, rel=1e-4)
    # FDK weighting: one view of ones backprojects (DSO / depth)^2 inside the beam (TIGRE's voxel_backprojection)
    plain = small_geo()
    b = tigre.Atb(np.ones((1, 31, 41), np.float32), plain, np.array([0.0]))
    assert b.shape == (24, 24, 24)
    xs = np.arange(24) - 11.5  # voxel x positions; the source is at +x, depth = DSO - x
    np.testing.assert_allclose(b[12, 12, :], (400.0 / (400.0 - xs)) ** 2, rtol=1e-4)


def test_fdk_uniform_cylinder_full_and_short_scan():
    geo = small_geo(n=32, det=(40, 64))
    cylinder = [Ellipsoid(0.02, (0, 0, 0), (10, 10, 8), cylinder=True)]
    for angles, filt in ((np.linspace(0, 2 * np.pi, 180, endpoint=False), None),
                         (np.linspace(0, np.pi + 2 * np.arctan(32 / 600) + 0.1, 120), "hann")):
        proj = line_integrals(cylinder, tigre.cone_geometry(geo, angles))
        rec = algs.fdk(proj, geo, angles, filter=filt)
        assert rec.shape == (32, 32, 32)
        assert rec[12:20, 12:20, 12:20].mean() == pytest.approx(0.02, rel=0.01)  # short scan: Parker weights
        assert abs(rec[16, 2, 2]) < 1e-3
    with pytest.raises(ValueError, match="filter must be one of"):
        algs.fdk(proj, geo, angles, filter="ramp")
    np.testing.assert_allclose(algs.FDK(proj, geo, angles, filter="shepp_logan"),
                               cbct.fdk(proj, tigre.cone_geometry(geo, angles), filter="shepp-logan"))


def test_input_checks_use_tigres_messages():
    geo = small_geo()
    angles = np.zeros(3)
    with pytest.raises(TypeError, match="should be float32"):
        tigre.Ax(np.ones((24, 24, 24)), geo, angles)
    with pytest.raises(ValueError, match="Input data should be of shape geo.nVoxel"):
        tigre.Ax(np.ones((24, 24, 20), np.float32), geo, angles)
    with pytest.raises(ValueError, match="Expected data shape"):
        tigre.Atb(np.ones((2, 31, 41), np.float32), geo, angles)
    with pytest.raises(ValueError, match="backprojection_type"):
        tigre.Atb(np.ones((3, 31, 41), np.float32), geo, angles, "pseudo")
    with pytest.raises(ValueError, match="projection_type"):
        tigre.Ax(np.ones((24, 24, 24), np.float32), geo, angles, "joseph")
    assert tigre.Ax(np.ones((24, 24, 24), np.float32), geo, angles, "Siddon", gpuids=None).shape == (3, 31, 41)


def test_gpu_path_on_the_emulated_device(emulated_cp, rng):
    cp = emulated_cp
    geo = small_geo(n=12, det=(15, 19))
    angles = np.linspace(0, np.pi, 6)
    x = rng.random((12, 12, 12)).astype(np.float32)
    p = tigre.Ax(x, geo, angles)
    p_gpu = tigre.Ax(cp.asarray(x), geo, angles)
    assert isinstance(p_gpu, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(p_gpu), p, rtol=1e-4, atol=1e-4)
    for kind in ("FDK", "matched"):
        np.testing.assert_allclose(cp.asnumpy(tigre.Atb(cp.asarray(p), geo, angles, kind)),
                                   tigre.Atb(p, geo, angles, kind), rtol=1e-3, atol=1e-3)
    noisy = CTnoise.add(cp.asarray(p), Poisson=1e5, rng=0)
    assert isinstance(noisy, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(noisy), CTnoise.add(p, Poisson=1e5, rng=0))
    rec = algs.sirt(cp.asarray(p), geo, angles, 3, verbose=False)
    assert isinstance(rec, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(rec), algs.sirt(p, geo, angles, 3), rtol=1e-3, atol=1e-5)


def test_ctnoise_follows_tigres_model():
    proj = np.full((4, 30, 30), 2.0, np.float32)
    noisy = CTnoise.add(proj, Poisson=1e5, Gaussian=np.array([0, 10]), rng=1)
    assert noisy.dtype == np.float32 and noisy.shape == proj.shape
    assert noisy.mean() == pytest.approx(2.0, abs=0.01)
    # relative photon noise at exp(-p / max) = exp(-1): std of p ≈ max * 1 / sqrt(I0 e^-1)
    assert noisy.std() == pytest.approx(2.0 / np.sqrt(1e5 * np.exp(-1)), rel=0.1)
    np.testing.assert_array_equal(noisy, CTnoise.add(proj, Poisson=1e5, Gaussian=np.array([0, 10]), rng=1))
    with pytest.raises(ValueError, match="Gaussian"):
        CTnoise.add(proj, Poisson=1e5, Gaussian=np.array([0, 1, 2]))


def test_head_phantom_loader(data_file):
    path = data_file("head_phantom.mat")
    head = sample_loader.load_head_phantom(np.array([20, 30, 24]), path=path)
    assert head.shape == (20, 30, 24) and head.dtype == np.float32
    assert 0.5 < head.max() <= 1.1 and head[0, 0, 0] == pytest.approx(0, abs=1e-3)


def test_head_phantom_loader_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="head_phantom.mat not found"):
        sample_loader.load_head_phantom(path=tmp_path / "nothing.mat")
    with pytest.raises(ValueError, match="number_of_voxels"):
        sample_loader.load_head_phantom(np.array([0, 4, 4]))


def test_plotting_writes_images(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("CBCT_TIGRE_PLOT_DIR", str(tmp_path / "plots"))
    vol = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    path = tigre.plotimg(vol, dim="Z")
    assert path.parent == tmp_path / "plots" and Image.open(path).size[0] > 10
    assert Image.open(tigre.plotimg(vol, dim="x", slice=3, savefig=tmp_path / "one.png")).size == (8, 6)
    gif = tigre.plotproj(np.random.default_rng(1).random((5, 7, 9)).astype(np.float32), savegif=tmp_path / "p.gif")
    assert Image.open(gif).n_frames == 5
    with pytest.raises(ValueError, match="dim must be"):
        tigre.plotimg(vol, dim="w")
