"""An emulated CUDA device: the real ``csrc`` kernels compiled as host C++ and run on the CPU behind a CuPy
stand-in, so that every CI run executes the kernel source without a GPU.

- :mod:`cbct.cuda.emulator.build`: the NVRTC string compiled with g++ and ``cuda_host.h`` (qualifiers, built-ins,
  intrinsics, atomics, textures with the Programming Guide's fetch rules), cached by hash; refuses shared memory,
  barriers and warp functions; optional AddressSanitizer / UndefinedBehaviorSanitizer builds.
- :mod:`cbct.cuda.emulator.module`: a build loaded in-process; launches checked against CUDA's limits,
  ``__launch_bounds__`` and the kernel's parameter types; ``__constant__`` symbols by name. Blocks run on
  ``$CBCT_EMULATOR_THREADS`` host threads (default 1), the threads of a block one after another.
- :mod:`cbct.cuda.emulator.standin` (with :mod:`~cbct.cuda.emulator.devices`, :mod:`~cbct.cuda.emulator.raw`,
  :mod:`~cbct.cuda.emulator.textures`): the CuPy stand-in (:func:`emulated_cupy`, :func:`standin_modules`).

What it is not: a timing model, or a check of what only a GPU decides (register pressure, texture-unit rounding
beyond the documented 8-bit weights, FMA contraction by NVRTC, concurrent streams). Those wait for a GPU run.
"""

from __future__ import annotations

from cbct.cuda.emulator.build import find_compiler
from cbct.cuda.emulator.standin import emulated_cupy, standin_modules

__all__ = ["emulated_cupy", "standin_modules", "compiler_available"]


def compiler_available() -> bool:
    """Whether a host C++ compiler for the harness exists (``$CXX`` or ``g++``)."""
    return find_compiler() is not None
