"""The stage registry: stage names to ``"module:function"`` references, imported only when a pipeline uses them.

Stages a pipeline may name: the registered ones (:data:`STAGES`) and those installed through the ``cbct.stages``
entry-point group (a package declares ``entry_points={"cbct.stages": ["denoise = mypkg.stages:denoise"]}``).
Any other ``"module:function"`` reference imports and runs arbitrary installed code, so it is refused unless the
caller opts in (``allow_any_stage=True``, ``cbct run --allow-any-stage``). Callables given from Python always run.

A stage is ``fn(state: PipelineState, *, param: type = default, ...) -> PipelineState``: typed keyword-only
parameters. Pipeline validation checks every parameter a pipeline gives against the signature: the name must be one
of them and the value must match its annotation (``int``, ``float``, ``bool``, ``str``, ``None``, unions,
``Literal``, mappings and sequences; other annotations are not checked). A stage function may also carry a
``params_schema`` attribute (a JSON-Schema ``object``) for finer limits, which is checked first.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
import types
import typing
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence as AbcSequence
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from cbct.imports import import_function
from cbct.schema import SchemaError, join_path, validate

log = logging.getLogger(__name__)

__all__ = ["STAGES", "StageFunction", "StageNotAllowedError", "resolve_stage", "check_stage_params", "stage_reference",
           "installed_stages", "matches_annotation", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "cbct.stages"


class StageNotAllowedError(SchemaError):
    """A pipeline names a ``module:function`` stage that is neither registered nor installed, without opt-in."""

StageFunction = Callable[..., Any]

STAGES: Mapping[str, str] = MappingProxyType({
    "preprocess": "cbct.pipeline.stages:preprocess_stage",
    "fdk": "cbct.pipeline.stages:fdk_stage",
    "motion_compensation": "cbct.pipeline.stages:motion_compensation_stage",
    "export": "cbct.pipeline.stages:export_stage",
    "sbp_mac": "cbct.sbp_mac.stage:sbp_mac_stage",
    "bbc_completion": "cbct.bbc.stage:completion_stage",
    "bbc_restoration": "cbct.bbc.stage:restoration_stage",
})


@functools.lru_cache(maxsize=1)
def installed_stages() -> Mapping[str, str]:
    """Stages installed by other packages through the ``cbct.stages`` entry-point group: name → reference."""
    found: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in STAGES:
            log.warning("entry point %s = %s ignored: %r is a built-in stage", ep.name, ep.value, ep.name)
            continue
        found[ep.name] = ep.value
    return MappingProxyType(found)


def stage_reference(stage: str, where: str = "") -> str:
    """The ``"module:function"`` reference of a registered or installed name, or of a reference given as such."""
    if stage in STAGES:
        return STAGES[stage]
    installed = installed_stages()
    if stage in installed:
        return installed[stage]
    module, sep, func = stage.partition(":")
    if sep and module and func.isidentifier():
        return stage
    prefix = f"{where}: " if where else ""
    extra = f"; installed: {', '.join(installed)}" if installed else ""
    raise SchemaError(f"{prefix}unknown stage {stage!r}; registered stages: {', '.join(STAGES)}{extra} "
                      "(or a 'package.module:function' reference, which needs allow_any_stage)", where)


def resolve_stage(stage: str | StageFunction, where: str = "", *, allow_any_stage: bool = False) -> StageFunction:
    """The stage function for a registered or installed name, a callable, or (with ``allow_any_stage``) any
    ``"module:function"`` reference; a reference without opt-in raises :class:`StageNotAllowedError` before
    anything is imported."""
    if callable(stage):
        return stage
    ref = stage_reference(stage, where)
    prefix = f"{where}: " if where else ""
    if stage not in STAGES and stage not in installed_stages() and not allow_any_stage:
        raise StageNotAllowedError(
            f"{prefix}stage {stage!r} is neither a registered stage ({', '.join(STAGES)}) nor one installed through "
            f"the '{ENTRY_POINT_GROUP}' entry-point group; running an arbitrary 'module:function' imports and calls "
            "any installed code, so it needs an explicit opt-in (allow_any_stage=True, cbct run --allow-any-stage)",
            where)
    return import_function(ref, f"{prefix}stage {stage!r}", "Is the package that provides it installed?")


def check_stage_params(fn: StageFunction, params: Mapping[str, Any], where: str, path: str) -> None:
    """Check ``params`` against the stage's ``params_schema`` (when it has one) and its signature."""
    schema = getattr(fn, "params_schema", None)
    if schema is not None:
        validate(dict(params), schema, where, path)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    accepted = [p for p in list(sig.parameters.values())[1:]]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted):
        return
    names = [p.name for p in accepted if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    prefix = f"{where}: " if where else ""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: names are still checked
        hints = {}
    for key, value in params.items():
        at = join_path(path, key)
        if key not in names:
            raise SchemaError(f"{prefix}{at}: unknown parameter for stage {getattr(fn, '__name__', fn)!s} "
                              f"(accepted: {', '.join(names) or 'none'})", at)
        if key in hints and not matches_annotation(value, hints[key]):
            raise SchemaError(f"{prefix}{at}: {value!r} is not a {_describe(hints[key])} (stage "
                              f"{getattr(fn, '__name__', fn)!s})", at)


def matches_annotation(value: Any, annotation: Any) -> bool:
    """Whether a parameter value read from YAML fits a stage parameter's type annotation (unknown types: yes)."""
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches_annotation(value, a) for a in args)
    if origin is typing.Literal:
        return value in args and type(value) in {type(a) for a in args}
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    container = origin or annotation
    if isinstance(container, type) and issubclass(container, AbcMapping):
        return isinstance(value, AbcMapping)
    if isinstance(container, type) and issubclass(container, (list, tuple, AbcSequence)) and container is not str:
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args and (container is not tuple or len(args) == 2 and args[1] is Ellipsis) else Any
        return all(matches_annotation(v, item) for v in value)
    return True


def _describe(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("NoneType", "None")
