"""Say so before Numba compiles a CPU kernel: the first run in a fresh install is otherwise silent for 15-20 s.

The kernels are compiled with ``cache=True``: the first process writes the machine code next to the sources (or to
``$NUMBA_CACHE_DIR``, or a per-user folder when that is read-only) and later processes load it in well under a
second. The kernel launchers call :func:`announce_compilation` just before a kernel's first call in a process; it
logs, on the logger ``cbct.cpu.compile_notice`` (which the command line shows by default), when that kernel has no
usable cached build.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

__all__ = ["has_cached_build", "announce_compilation"]


def has_cached_build(dispatcher) -> bool:
    """Whether Numba's on-disk cache holds a build of the ``@njit(cache=True)`` function ``dispatcher`` for its
    current source (read from Numba's cache index; ``False`` when that cannot be read)."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())  # empty when absent or stale (source changed)
    except Exception:  # Numba's internals moved: we cannot tell, so expect a compile
        return False


@functools.cache
def announce_compilation(dispatcher, label: str) -> bool:
    """Log that ``dispatcher`` (a kernel, named ``label`` in the message) is about to be compiled, once per process
    and only when neither this process nor the on-disk cache has a build. Returns whether it logged."""
    if dispatcher.overloads or has_cached_build(dispatcher):
        return False
    log.info(
        "compiling the CPU kernel for %s with Numba: 5-10 s, on the first run only (the build is cached in %s)",
        label, dispatcher._cache.cache_path,
    )
    return True
