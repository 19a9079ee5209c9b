"""cbct's calls into CuPy, and the CuPy stand-in of the tests, checked against the real CuPy, without a GPU.

Every ``cupy.`` / ``cp.`` / ``xp.`` / ``cupyx.`` attribute chain in cbct (and in the tests), and every name imported
``from cupy...``, is found by parsing the sources; each must exist in the installed CuPy, and each call must fit the
real signature: bound to ``inspect.signature`` where CuPy exposes one, otherwise made for real with placeholder
arguments, where a TypeError about the number or names of arguments means the layout is wrong and anything else
(a wrong-type TypeError, a CUDA error without a driver) means CuPy took it. The stand-in (:func:`standin_modules`)
may expose only names that real CuPy has.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import pathlib
import re
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import cbct
from cbct.cuda import textures
from cbct.cuda.compile import compile_options
from cbct.cuda.sources import KERNEL_FILES, kernel_source

cupy = pytest.importorskip("cupy", reason="real CuPy is not installed (the test extra installs cupy-cuda12x)")
from cupy.cuda import runtime, texture  # noqa: E402
from cupy_backends.cuda.api.driver import CUDADriverError  # noqa: E402
from cupy_backends.cuda.api.runtime import CUDARuntimeError  # noqa: E402

CUDA_ERRORS = (CUDARuntimeError, CUDADriverError)
PACKAGE = pathlib.Path(cbct.__file__).resolve().parent
TESTS = pathlib.Path(__file__).resolve().parent
#: Names that hold CuPy wherever they appear (``xp``: NumPy or CuPy, so it must work with CuPy).
MODULE_NAMES = {"cupy": "cupy", "cp": "cupy", "cupyx": "cupyx", "xp": "cupy"}
#: Methods and attributes cbct/cuda uses on CuPy objects it holds (the AST cannot see a local variable's type).
INSTANCE_CALLS: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("cupy.RawModule", "compile", 0, ()),
    ("cupy.RawModule", "get_function", 1, ()),
    ("cupy.RawModule", "get_global", 1, ()),
    ("cupy.RawKernel", "__call__", 3, ()),
    ("cupy.cuda.MemoryPointer", "copy_from_device_async", 3, ()),
    ("cupy.cuda.Stream", "wait_event", 1, ()),
    ("cupy.cuda.Stream", "synchronize", 0, ()),
    ("cupy.cuda.Stream", "record", 0, ()),
    ("cupy.cuda.Stream", "__enter__", 0, ()),
    ("cupy.cuda.Event", "record", 1, ()),
    ("cupy.cuda.Event", "synchronize", 0, ()),
    ("cupy.cuda.Device", "__enter__", 0, ()),
    ("cupy.cuda.texture.CUDAarray", "copy_from", 2, ()),
    ("cupy.ndarray", "get", 0, ()),
    ("cupy.ndarray", "set", 1, ("stream",)),
    ("cupy.ndarray", "astype", 1, ()),
    ("cupy.cuda.memory.MemoryPool", "free_bytes", 0, ()),
)
INSTANCE_ATTRIBUTES = (("cupy.ndarray", "data"), ("cupy.ndarray", "nbytes"), ("cupy.ndarray", "device"),
                       ("cupy.cuda.Device", "id"), ("cupy.cuda.Device", "attributes"))
#: TypeError messages of CPython/Cython argument parsing: the call's layout (count, names), not its values, is wrong.
_LAYOUT_ERROR = re.compile(r"positional argument|keyword argument|takes (exactly|at most|at least|no) |missing requ")


def standin_modules() -> dict[str, types.ModuleType]:
    """The test stand-in's modules keyed by their ``sys.modules`` names (``cupy``, ``cupy.cuda``, ...)."""
    try:
        from cbct.cuda.emulator import standin_modules as build
    except ImportError:
        from fake_cupy import build
    return build()


# ------------------------------------------------------------------------------------------------ finding uses
@dataclasses.dataclass(frozen=True)
class Use:
    """One attribute chain into CuPy, e.g. ``cupy.cuda.Event`` at ``cbct/cuda/compile.py:110``, and its call."""

    path: str
    where: str
    positional: int | None = None  # None: not called
    keywords: frozenset[str] = frozenset()
    starred: bool = False


def _cupy_imports(nodes: Iterator[ast.AST]) -> dict[str, str]:
    aliases_of = ("cupy", "cupyx")
    aliases = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in aliases_of:
                    aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in aliases_of:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _chain(node: ast.AST) -> tuple[str, list[str]] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return (node.id, parts[::-1]) if isinstance(node, ast.Name) and parts else None


def uses_in(file: pathlib.Path, label: str) -> list[Use]:
    """The CuPy attribute chains read (and called) in ``file``; function-local ``from cupy... import`` count in
    that function only."""
    found: list[Use] = []

    def visit(node: ast.AST, aliases: dict[str, str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local = (n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
            aliases = {**aliases, **_cupy_imports(local)}
        target = node.func if isinstance(node, ast.Call) else node
        chain = _chain(target) if isinstance(target, ast.Attribute) and isinstance(target.ctx, ast.Load) else None
        if chain and chain[0] in aliases:
            path, where = ".".join([aliases[chain[0]], *chain[1]]), f"{label}:{node.lineno}"
            if isinstance(node, ast.Call):
                keywords = frozenset(k.arg for k in node.keywords if k.arg)
                starred = any(isinstance(a, ast.Starred) for a in node.args) or len(keywords) < len(node.keywords)
                found.append(Use(path, where, len(node.args), keywords, starred))
                for child in (*node.args, *node.keywords):
                    visit(child, aliases)
            else:
                found.append(Use(path, where))
            return
        for child in ast.iter_child_nodes(node):
            visit(child, aliases)

    tree = ast.parse(file.read_text(encoding="utf-8"))
    visit(tree, {**MODULE_NAMES, **_cupy_imports(iter(tree.body))})
    return found


@functools.lru_cache(maxsize=None)
def library_uses() -> tuple[Use, ...]:
    """Uses in the cbct package, less the stand-in's own code (where ``cupy`` names the stand-in being built)."""
    emulator = PACKAGE / "cuda" / "emulator"
    files = sorted(f for f in PACKAGE.rglob("*.py") if emulator not in f.parents)
    return tuple(u for f in files for u in uses_in(f, str(f.relative_to(PACKAGE.parent))))


@functools.lru_cache(maxsize=None)
def suite_uses() -> tuple[Use, ...]:
    """Uses in the tests, less private names (the stand-in's test hooks, CuPy internals that tests drive)."""
    files = sorted(f for f in TESTS.glob("*.py") if f.name != "fake_cupy.py")
    found = (u for f in files for u in uses_in(f, f"tests/{f.name}"))
    return tuple(u for u in found if not any(part.startswith("_") for part in u.path.split(".")))


def resolve(path: str) -> Any:
    """The object at a dotted path in the real CuPy (importing submodules on the way); AttributeError if none."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], 2):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                raise AttributeError(f"real CuPy has no {path}") from None
    return obj


# ------------------------------------------------------------------------------------------------ calling real CuPy
def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def refused(
    fn: Callable[..., Any], positional: int, keywords: frozenset[str] | tuple[str, ...], self_args: tuple[Any, ...] = ()
) -> str | None:
    """Why real CuPy refuses ``fn`` called with ``positional`` arguments and ``keywords``, or None if it takes it.

    ``self_args``: ``(instance,)`` for an unbound method. Placeholder arguments are ``object()``."""
    signature = _signature(fn)
    if signature is not None:
        try:
            signature.bind(*(None,) * (len(self_args) + positional), **dict.fromkeys(keywords))
        except TypeError as exc:
            return f"{signature}: {exc}"
        return None
    if isinstance(fn, cupy.ufunc):
        return None if positional <= fn.nin + fn.nout else f"ufunc {fn.__name__} takes {fn.nin} inputs"
    try:
        fn(*self_args, *(object() for _ in range(positional)), **{k: object() for k in keywords})
    except TypeError as exc:
        return str(exc) if _LAYOUT_ERROR.search(str(exc)) else None
    except Exception:  # noqa: BLE001 - a CUDA error, or the placeholder refused by type: the layout was accepted
        return None
    return None


def _null_pointer() -> Any:
    from cupy.cuda import memory

    return memory.MemoryPointer(memory.UnownedMemory(0, 0, None, 0), 0)


def _instances() -> dict[str, Any]:
    """One real instance of each class of :data:`INSTANCE_CALLS`, made without a device."""
    return {
        "cupy.RawModule": cupy.RawModule(code="", options=(), name_expressions=("k",)),
        "cupy.RawKernel": cupy.RawKernel('extern "C" __global__ void k() {}', "k"),
        "cupy.cuda.MemoryPointer": _null_pointer(),
        "cupy.cuda.Stream": cupy.cuda.Stream.null,
        "cupy.cuda.Event": None,  # inspectable signatures: bound without an instance
        "cupy.cuda.Device": cupy.cuda.Device(0),
        "cupy.cuda.texture.CUDAarray": texture.CUDAarray.__new__(texture.CUDAarray),  # not allocated
        "cupy.ndarray": cupy.ndarray((0,), dtype=np.float32, memptr=_null_pointer()),
        "cupy.cuda.memory.MemoryPool": cupy.get_default_memory_pool(),
    }


def _cuda_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; None when it stops at a CUDA error (no driver or no device)."""
    try:
        return fn(*args, **kwargs)
    except CUDA_ERRORS:
        return None


# ------------------------------------------------------------------------------------------------ cbct vs CuPy
def test_the_scan_finds_the_calls_of_cbct_cuda():
    paths = {u.path for u in library_uses()}
    assert {"cupy.RawModule", "cupy.cuda.Event", "cupy.cuda.texture.TextureDescriptor", "cupyx.empty_pinned",
            "cupy.cuda.runtime.cudaFilterModeLinear", "cupy.cuda.Stream", "cupy.cuda.ExternalStream"} <= paths
    layouts = {(u.path, u.positional, u.keywords) for u in library_uses()}
    assert ("cupy.cuda.texture.ResourceDescriptor", 1, frozenset({"cuArr"})) in layouts


@pytest.mark.parametrize("uses", [library_uses, suite_uses], ids=["cbct", "tests"])
def test_every_cupy_name_used_exists_in_real_cupy(uses):
    missing = []
    for use in uses():
        try:
            resolve(use.path)
        except AttributeError:
            missing.append(f"{use.path} ({use.where})")
    assert not missing, "real CuPy has no:\n" + "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("uses", [library_uses, suite_uses], ids=["cbct", "tests"])
def test_every_call_fits_real_cupy(uses):
    wrong = []
    seen = set()
    for use in uses():
        key = (use.path, use.positional, use.keywords)
        if use.positional is None or use.starred or key in seen:
            continue
        seen.add(key)
        reason = refused(resolve(use.path), use.positional, use.keywords)
        if reason:
            layout = f"{use.positional} positional, keywords {sorted(use.keywords)}"
            wrong.append(f"{use.path}({layout}) at {use.where}: {reason}")
    assert not wrong, "calls real CuPy refuses:\n" + "\n".join(wrong)


@pytest.mark.parametrize("cls, method, positional, keywords", INSTANCE_CALLS,
                         ids=[f"{c}.{m}" for c, m, *_ in INSTANCE_CALLS])
def test_methods_cbct_calls_on_cupy_objects(cls: str, method: str, positional: int, keywords: tuple[str, ...]):
    owner = resolve(cls)
    assert hasattr(owner, method), f"real {cls} has no {method}"
    instance, fn = _instances()[cls], getattr(owner, method)
    assert instance is not None or _signature(fn) is not None, f"no instance of {cls} to call {method} on"
    assert refused(fn, positional, keywords, self_args=(instance,)) is None


@pytest.mark.parametrize("cls, attribute", INSTANCE_ATTRIBUTES)
def test_attributes_cbct_reads_on_cupy_objects(cls: str, attribute: str):
    assert hasattr(resolve(cls), attribute), f"real {cls} has no {attribute}"


def test_device_attribute_names_textures_reads():
    """``Device.attributes`` keys are the ``cudaDevAttr*`` names less that prefix (CuPy's docstring)."""
    for key in textures._DEFAULT_LIMITS:
        assert hasattr(runtime, f"cudaDevAttr{key}"), f"CuPy's Device.attributes has no {key!r}"


@pytest.mark.parametrize("texture_dtype", textures.TEXTURE_DTYPES)
@pytest.mark.parametrize("layered", [False, True])
def test_texture_objects_build_as_textures_builds_them(texture_dtype: str, layered: bool):
    """The descriptor calls of cbct/cuda/textures.py with their values; the two that need a driver stop at a CUDA
    error here (and build for real on a GPU)."""
    bits = textures._check_dtype(texture_dtype)
    flags = 0x01 if layered else 0  # cudaArrayLayered (CUDA's driver_types.h; CuPy's runtime does not export it)
    channel = texture.ChannelFormatDescriptor(bits, 0, 0, 0, runtime.cudaChannelFormatKindFloat)
    assert channel.get_channel_format() == {"x": bits, "y": 0, "z": 0, "w": 0, "f": runtime.cudaChannelFormatKindFloat}
    array = _cuda_call(texture.CUDAarray, channel, 5, 4, 3, flags) or texture.CUDAarray.__new__(texture.CUDAarray)
    resource = texture.ResourceDescriptor(runtime.cudaResourceTypeArray, cuArr=array)
    assert resource.get_resource_desc()["resType"] == runtime.cudaResourceTypeArray
    for filter_mode in (runtime.cudaFilterModePoint, runtime.cudaFilterModeLinear):
        description = texture.TextureDescriptor(
            addressModes=(runtime.cudaAddressModeBorder,) * 3, filterMode=filter_mode,
            readMode=runtime.cudaReadModeElementType, normalizedCoords=0, borderColors=(0.0, 0.0, 0.0, 0.0),
        )
        desc = description.get_texture_desc()
        assert desc["addressMode"] == (runtime.cudaAddressModeBorder,) * 3 and desc["filterMode"] == filter_mode
        assert desc["normalizedCoords"] == 0 and desc["borderColor"] == (0.0, 0.0, 0.0, 0.0)
        _cuda_call(texture.TextureObject, resource, description)


@pytest.mark.parametrize("file", sorted(KERNEL_FILES))
def test_raw_module_takes_the_compile_arguments(file: str):
    """``RawModule(code=..., options=..., name_expressions=...)`` as cbct/cuda/compile.py makes it (CuPy's Cython
    signature wants a tuple of options); compiling needs a device, so here it stops at a CUDA error."""
    options = compile_options(file)
    assert isinstance(options, tuple) and isinstance(KERNEL_FILES[file], tuple)
    module = cupy.RawModule(code=kernel_source(file), options=options, name_expressions=KERNEL_FILES[file])
    _cuda_call(module.compile)
    with pytest.raises(TypeError, match="options"):
        cupy.RawModule(code=kernel_source(file), options=list(options), name_expressions=KERNEL_FILES[file])


# ------------------------------------------------------------------------------------------------ the stand-in
def _standin_classes(value: Any) -> list[type]:
    value = value.func if isinstance(value, functools.partial) else value
    if not isinstance(value, type):
        return []
    return [c for c in value.__mro__ if c is not object and not c.__module__.startswith(("numpy", "builtins"))]


def _public(namespace: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(namespace).items() if not k.startswith("_")}


def _standin_names() -> Iterator[tuple[str, Any, Any]]:
    """``(path, stand-in value, real CuPy's value or None)`` of every public name of the stand-in's modules."""
    for module_name, module in standin_modules().items():
        for name, value in _public(module).items():
            path = f"{module_name}.{name}"
            try:
                yield path, value, resolve(path)
            except AttributeError:
                yield path, value, None


def test_standin_exposes_only_names_real_cupy_has():
    extra = []
    for path, value, real in _standin_names():
        if real is None:
            extra.append(path)
            continue
        if isinstance(value, types.SimpleNamespace):
            extra += [f"{path}.{n}" for n in _public(value) if not hasattr(real, n)]
        for cls in _standin_classes(value):
            extra += [f"{path}.{n}" for n in _public(cls) if not hasattr(real, n)]
    assert not extra, "the stand-in exposes what real CuPy lacks:\n" + "\n".join(sorted(set(extra)))


def test_standin_takes_no_keyword_real_cupy_refuses():
    wrong = []
    for path, value, real in _standin_names():
        if real is None:
            continue  # test_standin_exposes_only_names_real_cupy_has reports it
        mine, theirs = _signature(value), _signature(real)
        if mine is None or theirs is None:
            continue  # real CuPy's Cython classes: the calls themselves are checked above
        if any(p.kind is p.VAR_KEYWORD for p in theirs.parameters.values()):
            continue
        optional = [p.name for p in mine.parameters.values()
                    if p.default is not p.empty and not p.name.startswith("_") and p.kind is not p.POSITIONAL_ONLY]
        wrong += [f"{path}: {n}= (real: {theirs})" for n in optional if n not in theirs.parameters]
    assert not wrong, "stand-in keywords real CuPy does not take:\n" + "\n".join(wrong)


def test_numpy_names_the_standin_passes_through_exist_in_real_cupy():
    """The stand-in's ``cupy`` passes NumPy names through; each name it lets through must be a real CuPy name."""
    standin = standin_modules()["cupy"]
    own = set(vars(standin))
    passed = [n for n in dir(np) if not n.startswith("_") and n not in own and hasattr(standin, n)]
    reached = {u.path.split(".")[1] for u in (*library_uses(), *suite_uses()) if u.path.startswith("cupy.")}
    through = sorted(reached & set(passed))  # what cbct and the tests take from NumPy through the stand-in
    assert through, "the scan found no NumPy name reached through the stand-in"
    assert not [n for n in through if not hasattr(cupy, n)], through
    missing = [n for n in passed if not hasattr(cupy, n)]
    assert not missing, f"the stand-in passes through NumPy names real CuPy lacks: {missing}"
