"""One weights format for every learned network: ``{kind, version, config, state_dict, meta}`` in a ``.pt`` file,
written atomically, read with ``torch.load(weights_only=True)``.

A network class names its ``weights_kind`` (a string) and its ``config_class`` (a dataclass with ``from_dict``);
its instances carry ``config``. :func:`load_weights` builds the network of the class it is given and refuses a
file of another kind; the file's ``meta`` (provenance: steps, seconds, device, metrics, training config) comes back
as ``model.meta``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from typing import Any, TypeVar

import torch

from cbct.io.atomic import atomic_path
from cbct.learned.config import plain_json

log = logging.getLogger(__name__)

__all__ = ["WEIGHTS_VERSION", "save_weights", "load_weights"]

WEIGHTS_VERSION = 1
_LEGACY_SBP_MAC = "cbct.sbp_mac/1"  # {format, model_config, state_dict, meta}, before this format

Net = TypeVar("Net", bound=torch.nn.Module)


def save_weights(path: str | os.PathLike, model: torch.nn.Module, *, meta: dict[str, Any] | None = None) -> pathlib.Path:
    """Write ``model`` (float32 state dict on the CPU), its config and ``meta`` to ``path`` atomically; returns the path.

    Raises:
        TypeError: a model class without ``weights_kind``.
    """
    kind = getattr(type(model), "weights_kind", None)
    if not isinstance(kind, str):
        raise TypeError(f"{type(model).__name__} has no weights_kind: it is not a cbct learned network")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
    blob = {"kind": kind, "version": WEIGHTS_VERSION, "config": plain_json(dataclasses.asdict(model.config)),
            "state_dict": state, "meta": plain_json(meta or {})}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def _upgrade(blob: dict[str, Any]) -> dict[str, Any]:
    """A blob of the two layouts before this format, in this format."""
    if blob.get("format") == _LEGACY_SBP_MAC:
        return {"kind": "sbp_mac", "version": WEIGHTS_VERSION, "config": blob["model_config"],
                "state_dict": blob["state_dict"], "meta": blob.get("meta", {})}
    if "kind" in blob and "version" not in blob:
        return {**blob, "version": WEIGHTS_VERSION}
    return blob


def load_weights(path: str | os.PathLike, model_class: type[Net], *, device: str | torch.device | None = None) -> Net:
    """The network of ``model_class`` stored at ``path``, in eval mode on ``device`` (default CPU), with ``.meta``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds another kind of weights, a newer format version, or is no weights file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a weights file
        raise ValueError(f"{path}: not a readable weights file ({exc})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not a cbct weights file (holds a {type(blob).__name__})")
    blob = _upgrade(blob)
    kind = model_class.weights_kind
    if blob.get("kind") != kind:
        raise ValueError(f"{path} holds {blob.get('kind')!r} weights, expected {kind!r}")
    if int(blob.get("version", 0)) > WEIGHTS_VERSION:
        raise ValueError(f"{path}: weights format version {blob['version']} is newer than this cbct reads "
                         f"({WEIGHTS_VERSION}); upgrade cbct")
    model = model_class(model_class.config_class.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.meta = dict(blob.get("meta", {}))
    return model.to(device or "cpu").eval()
