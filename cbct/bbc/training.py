"""BBC-Recon's training configuration: the defaults (:data:`DEFAULTS`), loaded through :mod:`cbct.learned.config`
(a YAML file over them, ``--set`` overrides, unknown keys refused), and the paths it names."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import torch

from cbct.learned import config as learned_config
from cbct.learned.loop import LOOP_DEFAULTS

__all__ = ["DEFAULTS", "load_config", "resolve_path", "charbonnier"]

ROOT = pathlib.Path(__file__).resolve().parents[2]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "threads": 1,
    "out_dir": "runs/bbc",  # checkpoints, log.jsonl, completion.pt, restoration.pt
    "cache_dir": ".cache/bbc",
    "scan": {},
    "noise": {"i0_range": [5.0e4, 5.0e5], "eval_i0": 2.0e5, "scale_range": [1.0, 1.0]},  # scale: calibration factor
    "data": {
        "train": [{"kind": "dental_ellipsoids", "seeds": [0, 24]}],  # never real anatomy: that is held out
        "val": [{"kind": "dental_ellipsoids", "seeds": [500, 502]}],
        "eval": [{"kind": "dental_ellipsoids", "seeds": [1000, 1004]}, {"kind": "head_mha", "seed_list": [0, 1]}],
    },
    "completion": {
        **LOOP_DEFAULTS,
        "model": {},
        "init": None,  # weights to start from (fine-tuning), when no checkpoint exists
        "crop": [64, 64],
        "gap_range": [2, 12],
        "photometric": 0.0,
        "smoothness": 0.0,
    },
    "restoration": {
        **LOOP_DEFAULTS,
        "steps": 2000,
        "model": {},
        "completion_weights": None,  # the completion network that makes its inputs (default: this run's)
        "factors": [4, 8],
        "sequences": 16,
        "blur_sigma_max": 0.0,
        "crop": [96, 96],
    },
}


def load_config(path: str | pathlib.Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The defaults overridden by the YAML file ``path`` and the ``section.key=value`` ``overrides``."""
    return learned_config.load_config(DEFAULTS, path, overrides)


def resolve_path(p: str | pathlib.Path) -> pathlib.Path:
    """A config path: absolute as given; a relative one from the working directory when it exists there, else from
    the package's parent (so ``configs/...`` of a source checkout is found from anywhere), else from the working
    directory (outputs)."""
    p = pathlib.Path(p)
    if p.is_absolute():
        return p
    if (pathlib.Path.cwd() / p).exists():
        return pathlib.Path.cwd() / p
    if (ROOT / p).exists():
        return ROOT / p
    return pathlib.Path.cwd() / p


def charbonnier(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean Charbonnier penalty ``sqrt(x² + eps²)`` (a smooth L1)."""
    return torch.sqrt(x * x + eps * eps).mean()
