"""BBC-Recon's two networks from their weights files (:mod:`cbct.learned.weights`), by default the shipped ones."""

from __future__ import annotations

import os

import torch

from cbct.bbc.model import FlowCompletionNet
from cbct.bbc.restoration import RestorationNet
from cbct.learned.weights import load_weights
from cbct.resources import shipped_weights

__all__ = ["load_completion", "load_restoration", "DEFAULT_COMPLETION", "DEFAULT_RESTORATION"]

DEFAULT_COMPLETION = shipped_weights("bbc_flow.pt")
DEFAULT_RESTORATION = shipped_weights("bbc_restore.pt")


def load_completion(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None) -> FlowCompletionNet:
    """The completion network from ``path`` (default: the shipped ``cbct/models/bbc_flow.pt``), in eval mode."""
    return load_weights(path or DEFAULT_COMPLETION, FlowCompletionNet, device=device)


def load_restoration(path: str | os.PathLike | None = None, *, device: str | torch.device | None = None) -> RestorationNet:
    """The restoration network from ``path`` (default: the shipped ``cbct/models/bbc_restore.pt``), in eval mode."""
    return load_weights(path or DEFAULT_RESTORATION, RestorationNet, device=device)
