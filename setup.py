"""Package definition for cbct: cone-beam CT reconstruction for dental CBCT."""

from setuptools import find_packages, setup

setup(
    name="cbct",
    version="0.1.0",
    description="Cone-beam CT reconstruction for dental CBCT: CPU and CUDA operators, FDK, learned corrections",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["cbct", "cbct.*"]),
    package_data={"cbct": ["csrc/*.cu", "cuda/emulator/*.h", "cuda/emulator/*.txt", "models/*.pt", "models/*.md", "builtin_pipelines/*.yaml", "builtin_manifests/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "numba>=0.58",
        "h5py>=3.8",
        "pillow>=9.0",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tifffile>=2023.1",
        "nibabel>=5.0",
        "pydicom>=2.4",
    ],
    extras_require={
        "gpu": ["cupy-cuda12x>=13.0"],  # CUDA 12 drivers
        "gpu-cuda13": ["cupy-cuda13x>=14.0"],  # CUDA 13 drivers
        "torch": ["torch>=2.1"],
        "ray": ["ray>=2.9,<3"],  # cbct run --executor ray (Ray core)
        # CuPy >= 14 imports without a driver and loads NVRTC from the nvidia-cuda-nvrtc-cu12 wheel (through
        # cuda-pathfinder): tests/test_nvrtc.py compiles the kernels with it and tests/test_cupy_api.py checks
        # cbct's CuPy calls against the real API, no GPU needed
        "test": ["pytest>=7.0", "torch>=2.1", "scikit-image>=0.21", "itk-rtk>=2.5", "cupy-cuda12x>=14.0",
                 "nvidia-cuda-nvrtc-cu12>=12.0", "ray>=2.9,<3"],
    },
    entry_points={"console_scripts": ["cbct=cbct.cli:main"]},
)
