"""CUDA C sources of the kernels, shipped as package data (``cbct/csrc/*.cu``, a link to the top-level ``csrc/``).

Kernel files may include other files of ``csrc/`` with ``#include "name.cu"``; :func:`kernel_source` inlines them
(once each), so NVRTC compiles a single self-contained string and needs no include path. Offline ``nvcc`` finds
the same files with ``-I csrc``.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

__all__ = ["KERNEL_FILES", "read_source", "kernel_source", "source_path"]

#: The files that define kernels, and the kernels each one defines (name expressions for NVRTC).
KERNEL_FILES: dict[str, tuple[str, ...]] = {
    "forward_projection.cu": ("joseph_project<false>", "joseph_project<true>"),
    "backprojection.cu": (
        "fdk_backproject<4, false>",
        "fdk_backproject<8, false>",
        "fdk_backproject<4, true>",
        "fdk_backproject<8, true>",
        "joseph_backproject",
    ),
}

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def _csrc():
    return importlib.resources.files("cbct") / "csrc"


def source_path(name: str):
    """The ``importlib.resources`` traversable of ``csrc/<name>`` (a real path in a source checkout or wheel)."""
    path = _csrc() / name
    if not path.is_file():
        available = sorted(p.name for p in _csrc().iterdir() if p.name.endswith(".cu"))
        raise FileNotFoundError(f"no CUDA source {name!r} in cbct/csrc (available: {available})")
    return path


@functools.lru_cache(maxsize=None)
def read_source(name: str) -> str:
    """Text of ``csrc/<name>`` as shipped."""
    return source_path(name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """Text of ``csrc/<name>`` with its ``#include "..."`` of other ``csrc`` files inlined (each file once)."""
    seen: set[str] = set()

    def expand(file: str) -> str:
        if file in seen:
            return f"// {file}: already included\n"
        seen.add(file)

        def replace(match: re.Match[str]) -> str:
            return f"// ---- begin {match.group(1)}\n{expand(match.group(1))}\n// ---- end {match.group(1)}"

        return _INCLUDE.sub(replace, read_source(file))

    return expand(name)
