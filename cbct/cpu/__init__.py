"""CPU kernels (Numba): the twins of the CUDA kernels in ``csrc/``."""
