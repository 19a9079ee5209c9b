"""Shared test configuration: data location, the GPU marker, small geometries."""

from __future__ import annotations

import importlib.util
import pathlib
import types

import numpy as np
import pytest

import cbct

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
DATA_DIRS = (REPO_DIR / "tests" / "data", REPO_DIR.parent / "shared" / "data")
"""Where tests look for real data files, in order: the repository's own copies, then ``../shared/data`` (CI)."""


def gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver or no device
        return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and CuPy; skipped where there is none")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU (CuPy with a device) on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_file():
    """``data_file(name)``: the path of a real data file from :data:`DATA_DIRS`; skips the test when none holds it."""

    def find(name: str) -> pathlib.Path:
        for folder in DATA_DIRS:
            if (folder / name).is_file():
                return folder / name
        pytest.skip(f"real data file {name} is absent: not in {DATA_DIRS[0]} nor in {DATA_DIRS[1]} (CI has the latter)")

    return find


@pytest.fixture
def one_numba_thread():
    """Tiny cases make thousands of kernel calls: one Numba thread avoids the parallel launch cost of each."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    """The small networks of the learned-stage tests run fastest, and reproducibly, on one torch thread."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_geometry() -> cbct.ConeGeometry:
    """A small full-circle scan: 64³ volume of 1 mm voxels, 90 views of 64 × 96 pixels of 1.2 mm."""
    return cbct.ConeGeometry.circular(
        dso=400.0, dsd=600.0, detector_shape=(64, 96), detector_pixel_size=1.2,
        volume_shape=64, voxel_size=1.0, n_views=90,
    )


@pytest.fixture(scope="session")
def load_benchmark():
    """``load(name)``: the script ``benchmarks/<name>.py`` imported as a module (benchmarks is not a package)."""

    def load(name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO_DIR / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def offset_shepp_logan_scan():
    """``make(volume_shape, detector_shape, n_views, half_size)``: Shepp-Logan scanned with an offset volume and a
    displaced detector (2.4 x 2.2 mm pixels, anisotropic voxels), float64 reference data: a dict of ``geom``,
    ``volume``, ``projections``, ``filtered``, ``filtered_geom`` (:func:`cbct.fdk_filter`) and ``bp`` (their CPU FDK
    backprojection)."""
    from cbct.cpu import kernels as cpu
    from cbct.phantoms import shepp_logan_projections, shepp_logan_volume

    def make(volume_shape: tuple[int, int, int], detector_shape: tuple[int, int], n_views: int,
             half_size: float) -> dict:
        geom = cbct.ConeGeometry.circular(
            dso=300.0, dsd=450.0, detector_shape=detector_shape, detector_pixel_size=(2.4, 2.2),
            volume_shape=volume_shape, voxel_size=(2.0, 1.9, 2.1), n_views=n_views, volume_offset=(1.5, -2.0, 1.0),
            detector_offset=(1.2, 0.0),
        )
        volume = shepp_logan_volume(geom.volume, half_size=half_size).astype(np.float64)
        projections = shepp_logan_projections(geom, half_size=half_size).astype(np.float64)
        filtered, filtered_geom = cbct.fdk_filter(projections, geom)
        return {"geom": geom, "volume": volume, "projections": projections, "filtered": filtered,
                "filtered_geom": filtered_geom, "bp": cpu.backproject_fdk(filtered, filtered_geom)[0]}

    return make


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def emulated_cp():
    """The CuPy stand-in whose kernels are the real ``csrc`` source compiled for the CPU (cbct.cuda.emulator);
    skips only where there is no C++ compiler."""
    from cbct.cuda.emulator import compiler_available, emulated_cupy

    if not compiler_available():
        pytest.skip("no C++ compiler (g++ or $CXX) for the CPU harness of the CUDA kernels")
    with emulated_cupy() as cp:
        yield cp


@pytest.fixture(params=["emulated", pytest.param("gpu", marks=pytest.mark.gpu)])
def device_cp(request):
    """CuPy on a CUDA device: the emulated one (every run) and the real GPU (where there is one)."""
    if request.param == "gpu":
        import cupy

        yield cupy
    else:
        yield request.getfixturevalue("emulated_cp")
