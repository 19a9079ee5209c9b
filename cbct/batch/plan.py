"""The plan of a batch: manifest entries to jobs, each with the fingerprint of what would make its result.

A fingerprint records the input (the manifest's sha256 when it gives one, else the size and modification time of
every file the entry reads), the manifest entry as written, the pipeline, the weights files of learned stages and the
cbct version. A finished result whose fingerprint differs from the plan's is recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from cbct.io.manifest import Manifest, ManifestEntry
from cbct.pipeline.spec import Pipeline
from cbct.version import __version__

__all__ = ["Job", "RunSettings", "make_plan", "fingerprint", "shard", "LEARNED_STAGES"]

LEARNED_STAGES = ("sbp_mac", "bbc_completion", "bbc_restoration")
"""Stages whose default weights are files shipped in ``cbct/models`` (part of the fingerprint)."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What every job of a run shares (sent to the workers with each job)."""

    out: pathlib.Path
    pipeline: Pipeline
    run_id: str
    manifest: str
    device: str = "cpu"
    profile: bool = False
    trace: bool = False
    allow_any_stage: bool = False


@dataclasses.dataclass(frozen=True)
class Job:
    """One scan to process: its manifest entry and the fingerprint its result will carry."""

    entry: ManifestEntry
    fingerprint: Mapping[str, Any]
    digest: str

    @property
    def id(self) -> str:
        return self.entry.id


def _stat_files(path: pathlib.Path) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of a file, or of every file under a folder (relative names); missing: empty."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    if path.is_dir():
        rows = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                p = pathlib.Path(root) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                rows.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
        return rows
    return []


def _entry_files(entry: ManifestEntry) -> list[pathlib.Path]:
    files = []
    target = entry.checksum_target()
    if target is not None:
        files.append(target)
    base = entry.base_dir
    geometry = entry.geometry
    if isinstance(geometry, str):
        gpath = pathlib.Path(os.path.expanduser(geometry))
        gpath = gpath if gpath.is_absolute() else base / gpath
        files.append(gpath)
    elif isinstance(geometry, Mapping) and isinstance(geometry.get("vectors_file"), str):
        vpath = pathlib.Path(geometry["vectors_file"])
        files.append(vpath if vpath.is_absolute() else base / vpath)
    return files


def _weights(pipeline: Pipeline) -> dict[str, Any]:
    """Size and mtime of weights files: file-valued stage parameters, and the shipped models of learned stages."""
    found: dict[str, Any] = {}
    models = pathlib.Path(__file__).resolve().parents[1] / "models"
    for stage in pipeline.stages:
        for key, value in stage.params.items():
            if isinstance(value, str) and value and pathlib.Path(value).is_file():
                found[f"{stage.name}.{key}"] = _stat_files(pathlib.Path(value))
        if isinstance(stage.stage, str) and stage.stage in LEARNED_STAGES and "weights" not in stage.params:
            found[f"{stage.name}.weights"] = [row for p in sorted(models.glob("*.pt")) for row in _stat_files(p)]
    return found


def fingerprint(entry: ManifestEntry, pipeline: Pipeline, *, weights: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What makes ``entry``'s result: input, manifest entry, pipeline, weights and cbct version."""
    if entry.sha256:
        source: dict[str, Any] = {"sha256": entry.sha256.lower()}
    else:
        source = {"files": {str(p): _stat_files(p) for p in _entry_files(entry)}}
    return {
        "input": source,
        "entry": json.loads(json.dumps(dict(entry.spec), sort_keys=True, default=str)),
        "pipeline": {"name": pipeline.name, "digest": pipeline.digest()},
        "weights": dict(weights if weights is not None else _weights(pipeline)),
        "cbct_version": __version__,
    }


def _digest(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def shard(ids: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """The ids of part ``part_id`` of ``num_parts`` (every ``num_parts``-th scan in manifest order)."""
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f"num_parts must be a whole number >= 1, got {num_parts!r}")
    if isinstance(part_id, bool) or not isinstance(part_id, int) or not 0 <= part_id < num_parts:
        raise ValueError(f"part_id must be a whole number in [0, {num_parts - 1}] for num_parts={num_parts}, got {part_id!r}")
    return list(ids[part_id::num_parts])


def make_plan(manifest: Manifest, pipeline: Pipeline, *, only: Sequence[str] | None = None) -> list[Job]:
    """One :class:`Job` per selected manifest entry, in manifest order."""
    weights = _weights(pipeline)
    jobs = []
    for entry in manifest.select(list(only) if only else None):
        fp = fingerprint(entry, pipeline, weights=weights)
        jobs.append(Job(entry, fp, _digest(fp)))
    return jobs
