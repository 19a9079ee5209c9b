"""What BBC-Recon's two trainings share: the configuration (defaults, YAML overrides with unknown keys refused,
paths), the device, mixed precision, the learning-rate schedule, the optimiser and atomic, resumable checkpoints."""

from __future__ import annotations

import copy
import logging
import math
import os
import pathlib
import platform
from typing import Any

import torch
import yaml

log = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "load_config", "resolve_path", "resolve_device", "autocast_dtype", "lr_at", "charbonnier",
           "save_checkpoint", "make_optimizer", "resume_checkpoint", "write_checkpoint", "describe_device"]

ROOT = pathlib.Path(__file__).resolve().parents[2]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "threads": 1,
    "out_dir": ".cache/bbc/run",
    "cache_dir": ".cache/bbc",
    "scan": {},
    "noise": {"i0_range": [5.0e4, 5.0e5], "eval_i0": 2.0e5, "scale_range": [1.0, 1.0]},  # scale: calibration factor
    "data": {
        "train": [{"kind": "dental_ellipsoids", "seeds": [0, 24]}],  # never real anatomy: that is held out
        "val": [{"kind": "dental_ellipsoids", "seeds": [500, 502]}],
        "eval": [{"kind": "dental_ellipsoids", "seeds": [1000, 1004]}, {"kind": "head_mha", "seed_list": [0, 1]}],
    },
    "completion": {
        "model": {},
        "init": None,  # weights to start from (fine-tuning), when no checkpoint exists
        "steps": 3000,
        "batch": 8,
        "crop": [64, 64],
        "gap_range": [2, 12],
        "photometric": 0.0,
        "smoothness": 0.0,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "warmup": 100,
        "amp": True,
        "checkpoint_every": 250,
        "log_every": 50,
    },
    "restoration": {
        "model": {},
        "factors": [4, 8],
        "sequences": 16,
        "blur_sigma_max": 0.0,
        "steps": 2000,
        "batch": 8,
        "crop": [96, 96],
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "warmup": 100,
        "amp": True,
        "checkpoint_every": 250,
        "log_every": 50,
    },
    "weights": {"completion": "cbct/models/bbc_flow.pt", "restoration": "cbct/models/bbc_restore.pt"},
}


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise ValueError(f"unknown setting {where}{k!r}; expected one of {sorted(base)}")
        if isinstance(base[k], dict) and base[k] and isinstance(v, dict) and k not in ("scan", "model"):
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | pathlib.Path | None) -> dict[str, Any]:
    """The defaults overridden by the YAML file ``path`` (unknown keys are errors)."""
    over: dict[str, Any] = {}
    if path is not None:
        p = pathlib.Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        over = yaml.safe_load(p.read_text()) or {}
        if not isinstance(over, dict):
            raise ValueError(f"{p}: the config must be a mapping, got {type(over).__name__}")
    return _merge(DEFAULTS, over)


def resolve_path(p: str | pathlib.Path) -> pathlib.Path:
    """A config path: absolute as given; a relative one from the working directory when it exists there, else from
    the package's parent (so ``cbct/models/...`` finds the shipped weights of an installed package), else from the
    working directory (outputs)."""
    p = pathlib.Path(p)
    if p.is_absolute():
        return p
    if (pathlib.Path.cwd() / p).exists():
        return pathlib.Path.cwd() / p
    if (ROOT / p).exists():
        return ROOT / p
    return pathlib.Path.cwd() / p


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return dev


def autocast_dtype(dev: torch.device) -> torch.dtype:
    return torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def charbonnier(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt(x * x + eps * eps).mean()


def save_checkpoint(path: pathlib.Path, blob: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def make_optimizer(model: torch.nn.Module, section: dict, dev: torch.device):
    """AdamW, whether mixed precision is on, its dtype, and the gradient scaler (float16 only) for one training section."""
    opt = torch.optim.AdamW(model.parameters(), lr=section["lr"], weight_decay=section["weight_decay"])
    use_amp = bool(section["amp"]) and dev.type == "cuda"
    amp_dtype = autocast_dtype(dev)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return opt, use_amp, amp_dtype, scaler


def resume_checkpoint(ckpt: pathlib.Path, model, opt, scaler, sampler, dev: torch.device, name: str) -> tuple[int, float, list]:
    """Restore model, optimiser, scaler and RNG states from ``ckpt``; returns ``(step, elapsed_s, history)``."""
    blob = torch.load(ckpt, map_location=dev, weights_only=False)
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["opt"])
    scaler.load_state_dict(blob["scaler"])
    sampler.rng.bit_generator.state = blob["sampler_rng"]
    torch.set_rng_state(blob["torch_rng"])
    log.info("resumed %s training at step %d", name, blob["step"])
    return blob["step"], blob["elapsed"], blob["history"]


def write_checkpoint(ckpt: pathlib.Path, model, opt, scaler, sampler, step: int, elapsed: float, history: list) -> None:
    """Write everything :func:`resume_checkpoint` needs, atomically."""
    save_checkpoint(ckpt, {
        "model": model.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict(), "step": step,
        "elapsed": elapsed, "history": history,
        "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
    })


def describe_device(dev: torch.device, threads: int) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA)"
    return f"CPU ({platform.processor() or platform.machine()}), {threads} torch thread(s)"
