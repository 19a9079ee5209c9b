"""Pipelines: ordered stages with parameters, from YAML files or built in Python.

A pipeline file (``pipelines/*.yaml``, schema ``pipelines/schema.yaml``)::

    name: fdk
    description: dental FDK
    version: 1
    stages:
      - stage: preprocess
      - stage: fdk
        params: {filter: hann}
      - stage: export
        params: {formats: [hdf5, nifti, png]}

The same in Python: ``Pipeline("fdk", [Stage("preprocess"), Stage("fdk", {"filter": "hann"}), Stage("export")])``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from cbct.pipeline.registry import check_stage_params, resolve_stage, stage_reference
from cbct.resources import builtin_dir, load_yaml
from cbct.schema import SchemaError, join_path, validate

__all__ = ["Stage", "Pipeline", "load_pipeline", "builtin_pipelines", "PIPELINE_FORMAT_VERSION"]

PIPELINE_FORMAT_VERSION = 1


def _schema() -> Mapping[str, Any]:
    return load_yaml(builtin_dir("pipelines") / "schema.yaml", "pipeline schema")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step: ``stage`` is a registered name, a ``"module:function"`` reference or a callable.

    Attributes:
        stage: what to run.
        params: keyword arguments of the stage function.
        label: name in timings and errors (default: the stage name).
    """

    stage: str | Callable[..., Any]
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: str | None = None

    def __post_init__(self) -> None:
        if not (callable(self.stage) or (isinstance(self.stage, str) and self.stage)):
            raise TypeError(f"stage must be a stage name, a 'module:function' reference or a callable, got {self.stage!r}")
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params of stage {self.name!r} must be a mapping, got {type(self.params).__name__}")
        object.__setattr__(self, "params", dict(self.params))

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if callable(self.stage):
            return getattr(self.stage, "__name__", "stage")
        return self.stage


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """An ordered list of :class:`Stage` s.

    Attributes:
        name: short name (recorded with the outputs).
        stages: the steps, in order.
        description: what it is for.
        source: the file it was read from, if any.
    """

    name: str
    stages: tuple[Stage, ...]
    description: str = ""
    source: str | None = None

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, Stage) else Stage(**s) if isinstance(s, Mapping) else Stage(s) for s in self.stages)
        if not stages:
            raise ValueError(f"pipeline {self.name!r} has no stages")
        labels = [s.name for s in stages]
        dupes = sorted({n for n in labels if labels.count(n) > 1})
        if dupes:
            raise ValueError(f"pipeline {self.name!r}: stage label(s) {dupes} appear more than once; give each a distinct 'label'")
        object.__setattr__(self, "stages", stages)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, doc: Any, *, source: str | None = None) -> Pipeline:
        """A pipeline from a parsed YAML/JSON document, validated against the schema (errors name the field)."""
        where = source or "pipeline"
        validate(doc, _schema(), where)
        stages = [Stage(s["stage"], s.get("params") or {}, s.get("label")) for s in doc["stages"]]
        try:
            pipeline = cls(doc["name"], tuple(stages), doc.get("description", ""), source)
        except ValueError as exc:
            raise SchemaError(f"{where}: stages: {exc}", "stages") from None
        for i, stage in enumerate(stages):  # names are checked now; imports wait until the pipeline runs
            if isinstance(stage.stage, str):
                stage_reference(stage.stage, f"{where}: {join_path('stages', i)}.stage")
        return pipeline

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Pipeline:
        return cls.from_dict(load_yaml(path, "pipeline"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON document of this pipeline (callable stages appear as ``module:function``)."""
        def ref(s: Stage) -> str:
            if callable(s.stage):
                return f"{s.stage.__module__}:{s.stage.__qualname__}"
            return s.stage

        stages = []
        for s in self.stages:
            entry: dict[str, Any] = {"stage": ref(s)}
            if s.label:
                entry["label"] = s.label
            if s.params:
                entry["params"] = copy.deepcopy(dict(s.params))
            stages.append(entry)
        doc: dict[str, Any] = {"name": self.name, "version": PIPELINE_FORMAT_VERSION, "stages": stages}
        if self.description:
            doc["description"] = self.description
        return doc

    def digest(self) -> str:
        """A short hash of the stages and parameters (identifies what produced an output)."""
        text = json.dumps(self.to_dict()["stages"], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolve(self, *, allow_any_stage: bool = False) -> list[tuple[Stage, Callable[..., Any]]]:
        """Import every stage and check its parameters; errors name the stage and parameter.

        ``allow_any_stage`` lets stages be arbitrary ``module:function`` references (see :mod:`cbct.pipeline.registry`).
        """
        where = self.source or f"pipeline {self.name!r}"
        out = []
        for i, stage in enumerate(self.stages):
            path = join_path("stages", i)
            fn = resolve_stage(stage.stage, f"{where}: {path}", allow_any_stage=allow_any_stage)
            check_stage_params(fn, stage.params, where, f"{path}.params")
            out.append((stage, fn))
        return out


def builtin_pipelines() -> dict[str, pathlib.Path]:
    """Shipped pipelines by name (``fdk``, ``motion``, ``sparse_view``, ...)."""
    return {p.stem: p for p in sorted(builtin_dir("pipelines").glob("*.yaml")) if p.stem != "schema"}


def load_pipeline(ref: Pipeline | Mapping[str, Any] | str | os.PathLike) -> Pipeline:
    """A :class:`Pipeline` from itself, a document, a YAML path, or the name of a built-in pipeline."""
    if isinstance(ref, Pipeline):
        return ref
    if isinstance(ref, Mapping):
        return Pipeline.from_dict(ref)
    path = pathlib.Path(ref)
    if path.is_file():
        return Pipeline.from_yaml(path)
    shipped = builtin_pipelines()
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if len(path.parts) == 1 and name in shipped:
        return Pipeline.from_yaml(shipped[name])
    raise FileNotFoundError(f"pipeline not found: {ref} (not a file; built-in pipelines: {', '.join(shipped)})")

