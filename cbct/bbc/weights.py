"""Saving and loading BBC-Recon weights: one ``.pt`` file per network with its configuration and provenance."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Any

import torch

from cbct.bbc.model import FlowCompletionConfig, FlowCompletionNet
from cbct.bbc.restoration import RestorationConfig, RestorationNet

log = logging.getLogger(__name__)

MODELS_DIR = pathlib.Path(__file__).resolve().parents[1] / "models"
DEFAULT_COMPLETION = MODELS_DIR / "bbc_flow.pt"
DEFAULT_RESTORATION = MODELS_DIR / "bbc_restore.pt"

__all__ = ["save_weights", "load_completion", "load_restoration", "DEFAULT_COMPLETION", "DEFAULT_RESTORATION"]

_KINDS = {"bbc_flow": (FlowCompletionNet, FlowCompletionConfig), "bbc_restore": (RestorationNet, RestorationConfig)}


def save_weights(path: str | pathlib.Path, model: torch.nn.Module, *, meta: dict[str, Any] | None = None) -> pathlib.Path:
    """Write ``model`` (a completion or restoration net) with its config and ``meta`` to ``path`` (atomically)."""
    kind = {FlowCompletionNet: "bbc_flow", RestorationNet: "bbc_restore"}.get(type(model))
    if kind is None:
        raise TypeError(f"model must be a FlowCompletionNet or RestorationNet, got {type(model).__name__}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()}
    meta_plain = json.loads(json.dumps(meta or {}, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    blob = {"kind": kind, "config": dataclasses.asdict(model.config), "state_dict": state, "meta": meta_plain}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _load(path: str | pathlib.Path, kind: str, device: str | torch.device | None) -> torch.nn.Module:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("kind") != kind:
        found = blob.get("kind") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path} holds {found!r} weights, expected {kind!r}")
    net_cls, cfg_cls = _KINDS[kind]
    model = net_cls(cfg_cls.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.meta = blob.get("meta", {})  # provenance: training steps, time, device, metrics
    return model.to(device or "cpu").eval()


def load_completion(path: str | pathlib.Path | None = None, *, device: str | torch.device | None = None) -> FlowCompletionNet:
    """The completion network from ``path`` (default: the shipped ``cbct/models/bbc_flow.pt``), in eval mode."""
    return _load(path or DEFAULT_COMPLETION, "bbc_flow", device)


def load_restoration(path: str | pathlib.Path | None = None, *, device: str | torch.device | None = None) -> RestorationNet:
    """The restoration network from ``path`` (default: the shipped ``cbct/models/bbc_restore.pt``), in eval mode."""
    return _load(path or DEFAULT_RESTORATION, "bbc_restore", device)
