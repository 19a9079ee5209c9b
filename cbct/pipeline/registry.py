"""The stage registry: stage names to ``"module:function"`` references, imported only when a pipeline uses them.

A stage is ``fn(state: PipelineState, **params) -> PipelineState``. A stage function may carry a ``params_schema``
attribute (a JSON-Schema ``object`` for its parameters) that pipeline validation checks; otherwise parameter names
are checked against its signature.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from cbct.pipeline.schema import SchemaError, join_path, validate

__all__ = ["STAGES", "StageFunction", "resolve_stage", "check_stage_params", "stage_reference"]

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


def stage_reference(stage: str, where: str = "") -> str:
    """The ``"module:function"`` reference of a registered name or of a reference given as such."""
    if stage in STAGES:
        return STAGES[stage]
    module, sep, func = stage.partition(":")
    if sep and module and func.isidentifier():
        return stage
    prefix = f"{where}: " if where else ""
    raise SchemaError(f"{prefix}unknown stage {stage!r}; registered stages: {', '.join(STAGES)} "
                      "(or give a 'package.module:function' reference)", where)


def resolve_stage(stage: str | StageFunction, where: str = "") -> StageFunction:
    """The stage function for a registered name, a ``"module:function"`` reference or a callable."""
    if callable(stage):
        return stage
    ref = stage_reference(stage, where)
    module_name, _, func_name = ref.partition(":")
    prefix = f"{where}: " if where else ""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{prefix}stage {stage!r} ({ref}) cannot be imported: {exc}. "
                          "Is the package that provides it installed?") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ImportError(f"{prefix}stage {stage!r}: module {module_name} has no function {func_name!r}")
    return fn


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
    for key in params:
        if key not in names:
            at = join_path(path, key)
            raise SchemaError(f"{prefix}{at}: unknown parameter for stage {getattr(fn, '__name__', fn)!s} "
                              f"(accepted: {', '.join(names) or 'none'})", at)
