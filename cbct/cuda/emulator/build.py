"""Compile a CUDA kernel source as host C++ (g++): the CPU harness behind the CuPy stand-in.

The exact string handed to NVRTC (:func:`cbct.cuda.sources.kernel_source`) is compiled with ``cuda_host.h``
force-included, the NVRTC options' ``-D`` defines and C++ standard, and a generated launcher appended: for each
name expression a C entry point that runs every thread of the grid in turn with the kernel's real parameter
types, one that reports those types, and one per ``__constant__`` symbol that gives its address and size.
Builds are cached on disk by a hash of everything that went into them.

Sources that use what a sequential schedule cannot run (``__shared__``, ``__syncthreads``, warp functions) are
refused with :class:`UnsupportedKernelError`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = [
    "UnsupportedKernelError",
    "HarnessBuildError",
    "BuildOptions",
    "find_compiler",
    "parse_nvrtc_options",
    "check_supported",
    "constant_symbols",
    "launch_bounds",
    "launcher_source",
    "build_library",
    "SANITIZERS",
]

#: Features a schedule that runs the threads of a block one after another cannot honour.
UNSUPPORTED = {
    r"\b__shared__\b": "shared memory (__shared__)",
    r"\b__syncthreads\w*\b": "block barriers (__syncthreads)",
    r"\b__syncwarp\b": "warp barriers (__syncwarp)",
    r"\b__shfl\w*\b": "warp shuffles (__shfl*)",
    r"\b__(?:ballot|any|all|uni|activemask)\w*\b": "warp votes (__ballot/__any/__all/__activemask)",
    r"\b__(?:match|reduce)_\w+\b": "warp match/reduce intrinsics",
    r"\bcooperative_groups\b": "cooperative groups",
}
SANITIZERS = ("address", "undefined")
SANITIZE_ENV = "CBCT_EMULATOR_SANITIZE"
THREADS_ENV = "CBCT_EMULATOR_THREADS"
CACHE_ENV = "CBCT_EMULATOR_CACHE"


class UnsupportedKernelError(RuntimeError):
    """The kernel source uses a CUDA feature the CPU harness cannot run faithfully."""


class HarnessBuildError(RuntimeError):
    """g++ failed to compile the kernel source as host C++."""


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What NVRTC's options mean for the host build.

    Attributes:
        defines: ``(name, value)`` pairs of the ``-D`` options, in order.
        std: C++ standard, e.g. ``"c++17"``.
        flush_denormals: ``-ftz=true`` (or fast math): denormal floats flushed to zero during launches.
    """

    defines: tuple[tuple[str, str], ...] = ()
    std: str = "c++17"
    flush_denormals: bool = False


def parse_nvrtc_options(options: Sequence[str]) -> BuildOptions:
    """The host build's reading of NVRTC options; options without a host meaning (architecture, ``-lineinfo``,
    ``--fmad``, ...) are accepted and ignored; an option that could change the kernel's meaning and that the harness
    does not know is refused."""
    defines: list[tuple[str, str]] = []
    std = "c++17"
    ftz = False
    ignored = re.compile(r"^(-arch|--gpu-architecture|-lineinfo|--generate-line-info|-G|--device-debug|--fmad|-fmad"
                         r"|--prec-div|-prec-div|--prec-sqrt|-prec-sqrt|-default-device|--restrict|-restrict"
                         r"|--extra-device-vectorization|-dw|--disable-warnings|-w|--dopt|-I|--include-path"
                         r"|--device-as-default-execution-space)")
    for option in options:
        if m := re.fullmatch(r"(?:-D|--define-macro=)(\w+)(?:=(.*))?", option):
            defines.append((m.group(1), m.group(2) if m.group(2) is not None else "1"))
        elif m := re.fullmatch(r"(?:--std|-std)=(c\+\+\d\d)", option):
            std = m.group(1)
        elif m := re.fullmatch(r"(?:--ftz|-ftz)=(true|false)", option):
            ftz = m.group(1) == "true"
        elif option in ("--use_fast_math", "-use_fast_math"):
            ftz = True
        elif ignored.match(option):
            continue
        else:
            raise ValueError(f"NVRTC option {option!r} has no known meaning for the CPU harness")
    return BuildOptions(tuple(defines), std, ftz)


def strip_comments(source: str) -> str:
    """The source without ``//`` and ``/* */`` comments (string literals are left alone)."""
    pattern = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
    return pattern.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " ", source)


def check_supported(source: str, what: str = "kernel source") -> None:
    """Raise :class:`UnsupportedKernelError` when the code uses shared memory, barriers or warp functions, or
    includes a header: NVRTC compiles the string without an include path (the host inlines csrc files first)."""
    code = strip_comments(source)
    if m := re.search(r"^[ \t]*#[ \t]*include[ \t]*([<\"][^>\"]*[>\"])", code, re.MULTILINE):
        raise UnsupportedKernelError(
            f"{what} includes {m.group(1)}: NVRTC compiles the string without an include path, so it cannot open "
            "that header; inline csrc files with cbct.cuda.sources.kernel_source and use no other header"
        )
    for pattern, feature in UNSUPPORTED.items():
        if m := re.search(pattern, code):
            raise UnsupportedKernelError(
                f"{what} uses {feature} ({m.group(0)!r}): the CPU harness runs the threads of a block one after "
                "another, which is a legal CUDA schedule only without shared memory, barriers and warp functions; "
                "teach the harness (cbct/cuda/emulator) to run them before a kernel uses them"
            )


def constant_symbols(source: str) -> list[str]:
    """Names of the ``__constant__`` variables defined at file scope."""
    code = strip_comments(source)
    return re.findall(r"__constant__\s+[\w:<>,\s]+?\b(\w+)\s*(?:\[[^\]]*\]\s*)*(?:=[^;]*)?;", code)


def launch_bounds(source: str, kernel: str) -> int | None:
    """Max threads per block of ``__launch_bounds__`` on the kernel named ``kernel`` (template base name), or None.

    A macro argument is resolved through the source's ``#define``s."""
    code = strip_comments(source)
    m = re.search(r"__launch_bounds__\s*\(\s*([^,)]+)[^)]*\)\s*" + re.escape(kernel) + r"\s*\(", code)
    if m is None:
        return None
    value = m.group(1).strip()
    if not value.isdigit():
        d = re.search(r"^[ \t]*#[ \t]*define[ \t]+" + re.escape(value) + r"[ \t]+(\d+)", code, re.MULTILINE)
        if d is None:
            raise ValueError(f"__launch_bounds__ of {kernel} is {value!r}, which the harness cannot evaluate")
        value = d.group(1)
    return int(value)


_LAUNCHER_HEADER = r"""
// ---- cbct CPU harness: launchers (generated by cbct/cuda/emulator/build.py)
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
namespace cbct_emu_gen {
template <class T> struct type_name { static_assert(sizeof(T) == 0, "cbct CPU harness: unsupported kernel parameter type"); };
#define CBCT_TYPE_NAME(T, S) template <> struct type_name<T> { static std::string get() { return S; } };
CBCT_TYPE_NAME(bool, "bool") CBCT_TYPE_NAME(char, "char") CBCT_TYPE_NAME(signed char, "signed char")
CBCT_TYPE_NAME(unsigned char, "unsigned char") CBCT_TYPE_NAME(short, "short") CBCT_TYPE_NAME(unsigned short, "unsigned short")
CBCT_TYPE_NAME(int, "int") CBCT_TYPE_NAME(unsigned int, "unsigned int") CBCT_TYPE_NAME(long, "long")
CBCT_TYPE_NAME(unsigned long, "unsigned long") CBCT_TYPE_NAME(long long, "long long")
CBCT_TYPE_NAME(unsigned long long, "unsigned long long") CBCT_TYPE_NAME(float, "float") CBCT_TYPE_NAME(double, "double")
CBCT_TYPE_NAME(void, "void")
#undef CBCT_TYPE_NAME
template <class T> struct type_name<T*> { static std::string get() { return type_name<T>::get() + "*"; } };
template <class T> struct type_name<const T*> { static std::string get() { return "const " + type_name<T>::get() + "*"; } };

template <class... Args>
std::string signature(void (*)(Args...)) {
    std::string s;
    ((s += (s.empty() ? "" : ","), s += type_name<Args>::get()), ...);
    return s;
}

template <class... Args, std::size_t... I>
void call(void (*fn)(Args...), void** args, std::index_sequence<I...>) {
    fn(*static_cast<std::remove_cv_t<std::remove_reference_t<Args>>*>(args[I])...);
}

// Runs blocks [first, last) (x fastest) of a grid[3] x block[3] launch (dimensions checked by the caller) on
// `workers` host threads, each taking the next block from a shared counter: blocks run in any order and
// concurrently, as on a GPU; within a block the threads run one after another. Returns the first fault, or null.
template <class... Args>
const char* launch(void (*fn)(Args...), const unsigned* grid, const unsigned* block, void** args, int flush_denormals,
                   unsigned long long first, unsigned long long last, int workers) {
    std::atomic<unsigned long long> next{first};
    std::atomic<const char*> first_fault{nullptr};
    auto work = [&]() {
#if defined(__SSE__)
        const unsigned int csr = _mm_getcsr();  // per host thread
        if (flush_denormals) _mm_setcsr(csr | 0x8040u);  // FTZ | DAZ
#endif
        cbct_emu::fault = nullptr;
        gridDim = dim3(grid[0], grid[1], grid[2]);
        blockDim = dim3(block[0], block[1], block[2]);
        const unsigned long long gx = grid[0], gy = grid[1];
        for (unsigned long long b = next++; b < last; b = next++) {
            blockIdx = uint3{(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / (gx * gy))};
            for (unsigned tz = 0; tz < block[2]; ++tz)
                for (unsigned ty = 0; ty < block[1]; ++ty)
                    for (unsigned tx = 0; tx < block[0]; ++tx) {
                        threadIdx = uint3{tx, ty, tz};
                        call(fn, args, std::index_sequence_for<Args...>{});
                    }
        }
        const char* none = nullptr;
        if (cbct_emu::fault != nullptr) first_fault.compare_exchange_strong(none, cbct_emu::fault);
#if defined(__SSE__)
        _mm_setcsr(csr);
#endif
    };
    std::vector<std::thread> pool;
    for (int w = 1; w < workers && (unsigned long long)w < last - first; ++w) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    return first_fault.load();
}
}  // namespace cbct_emu_gen
"""


def launcher_source(name_expressions: Sequence[str], symbols: Sequence[str]) -> str:
    """C++ appended to the kernel source: ``cbct_emu_launch_<i>``, ``cbct_emu_signature_<i>`` per name
    expression (index ``i`` in order) and ``cbct_emu_symbol_<name>`` per constant symbol."""
    parts = [_LAUNCHER_HEADER]
    for index, name in enumerate(name_expressions):
        parts.append(
            f'extern "C" const char* cbct_emu_launch_{index}(const unsigned* grid, const unsigned* block, void** args, '
            f"int ftz, unsigned long long first, unsigned long long last, int workers) {{\n"
            f"    return cbct_emu_gen::launch(&{name}, grid, block, args, ftz, first, last, workers);\n}}\n"
            f'extern "C" const char* cbct_emu_signature_{index}() {{  // {name}\n'
            f"    static const std::string s = cbct_emu_gen::signature(&{name});\n    return s.c_str();\n}}\n"
        )
    for symbol in symbols:
        parts.append(
            f'extern "C" void* cbct_emu_symbol_{symbol}(unsigned long long* size) {{\n'
            f"    *size = sizeof({symbol});\n    return (void*)&{symbol};\n}}\n"
        )
    return "\n".join(parts)


def header_path() -> Path:
    """Path of ``cuda_host.h`` (force-included in every build)."""
    return Path(str(importlib.resources.files("cbct.cuda.emulator") / "cuda_host.h"))


def find_compiler() -> str | None:
    """The host C++ compiler: ``$CXX``, else ``g++`` on the PATH; None when there is none."""
    return os.environ.get("CXX") or shutil.which("g++")


def sanitizers_from_env() -> tuple[str, ...]:
    """Sanitizers asked for in ``$CBCT_EMULATOR_SANITIZE`` (comma-separated: ``address``, ``undefined``)."""
    raw = os.environ.get(SANITIZE_ENV, "").strip()
    names = tuple(s.strip() for s in raw.split(",") if s.strip())
    unknown = set(names) - set(SANITIZERS)
    if unknown:
        raise ValueError(f"{SANITIZE_ENV} names unknown sanitizers {sorted(unknown)}; expected some of {SANITIZERS}")
    return names


def threads_from_env() -> int:
    """Host threads a launch runs its blocks on: ``$CBCT_EMULATOR_THREADS`` (default 1: one after another, so that
    float atomics add in a fixed order and results repeat exactly)."""
    raw = os.environ.get(THREADS_ENV, "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def cache_dir() -> Path:
    """Where builds are kept: ``$CBCT_EMULATOR_CACHE``, else ``$XDG_CACHE_HOME/cbct/emulator`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cbct" / "emulator"


def compile_command(compiler: str, options: BuildOptions, sanitize: Sequence[str], source: Path, output: Path) -> list[str]:
    """The g++ command line of one build."""
    flags = [f"-std={options.std}", "-shared", "-fPIC", "-pthread", "-fno-fast-math", "-ffp-contract=off", "-fno-strict-aliasing",
             "-Wno-unknown-pragmas", "-Wno-attributes", "-include", str(header_path())]
    if sanitize:
        flags += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={','.join(sanitize)}", "-fno-sanitize-recover=all"]
    else:
        flags += ["-O2"]
    flags += [f"-D{k}={v}" for k, v in options.defines]
    return [compiler, *flags, "-x", "c++", str(source), "-o", str(output)]


def build_library(source: str, options: Sequence[str], name_expressions: Sequence[str], *,
                  sanitize: Sequence[str] | None = None, what: str = "kernel source") -> tuple[Path, list[str]]:
    """Compile ``source`` (the NVRTC string) for the CPU; returns the shared library and the constant symbols.

    Raises :class:`UnsupportedKernelError` for sources the harness cannot run, :class:`HarnessBuildError` when g++
    fails (its diagnostics in the message) and ``FileNotFoundError`` when there is no C++ compiler.
    """
    check_supported(source, what)
    compiler = find_compiler()
    if compiler is None:
        raise FileNotFoundError("no C++ compiler for the CPU harness (install g++ or set CXX)")
    build_options = parse_nvrtc_options(options)
    sanitize = sanitizers_from_env() if sanitize is None else tuple(sanitize)
    symbols = constant_symbols(source)
    full = source + "\n" + launcher_source(name_expressions, symbols)
    key_material = "\0".join([full, header_path().read_text(), repr(build_options), repr(sanitize), compiler,
                              _compiler_version(compiler)])
    key = hashlib.sha256(key_material.encode()).hexdigest()[:32]
    directory = cache_dir()
    library = directory / f"{key}.so"
    if not library.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            src = Path(tmp) / "kernel.cu.cpp"
            src.write_text(full, encoding="utf-8")
            out = Path(tmp) / "kernel.so"
            cmd = compile_command(compiler, build_options, sanitize, src, out)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise HarnessBuildError(f"g++ could not compile {what} for the CPU harness (exit {proc.returncode}):\n"
                                        f"{proc.stderr[-6000:]}")
            os.replace(out, library)  # atomic: a concurrent build of the same key writes the same bytes
        log.debug("built %s for the CPU harness: %s", what, library)
    return library, symbols


@functools.lru_cache(maxsize=None)
def _compiler_version(compiler: str) -> str:
    proc = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else compiler
