"""The one training loop of the learned stages: seeded, resumable, mixed precision on CUDA, scheduled, validated.

A stage hands :func:`run_training` its network, a ``loss_fn(rng)`` that draws a batch with the loop's NumPy
generator and returns ``(loss, parts)``, and optionally a ``validate()``. The loop owns the optimiser (AdamW), the
learning-rate schedule (linear warm-up, cosine decay to ``lr_floor`` of the peak), gradient clipping, autocast
(bfloat16 where the GPU supports it, else float16 with gradient scaling; off on the CPU), logging (to the log and to
``log.jsonl``) and the checkpoint: every ``checkpoint_every`` steps, at the end and when ``stop_after`` stops a run,
it writes network, optimiser, scaler, both random states, step, seconds and history atomically. A run started again
on the same checkpoint resumes and draws the batches an uninterrupted run would have drawn; a checkpoint written for
another configuration is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from cbct.io.atomic import atomic_path
from cbct.learned.config import plain_json
from cbct.learned.device import autocast_dtype

log = logging.getLogger(__name__)

__all__ = ["LOOP_DEFAULTS", "RUNTIME_KEYS", "LoopSettings", "TrainingRun", "lr_at", "run_training"]

RUNTIME_KEYS = ("device", "threads", "out_dir", "cache_dir")  # where and how fast, not what: a resume may change them


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How one network trains: ``steps`` optimiser steps of ``batch`` samples; AdamW at peak ``lr`` (``weight_decay``)
    after ``warmup`` steps, cosine-decayed to ``lr_floor`` × ``lr``; gradients clipped to norm ``grad_clip`` (0: no
    clipping); ``amp``: mixed precision on CUDA; log, validate and checkpoint every so many steps."""

    steps: int = 3000
    batch: int = 8
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    warmup: int = 100
    lr_floor: float = 0.05
    grad_clip: float = 1.0
    amp: bool = True
    log_every: int = 50
    val_every: int = 250
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "log_every", "val_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive number of steps, got {getattr(self, name)!r}")
        if not self.lr > 0 or not 0 <= self.lr_floor <= 1 or self.warmup < 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0, 0 <= lr_floor <= 1, warmup >= 0, grad_clip >= 0; got {self}")

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> LoopSettings:
        """The loop's keys of a config section (the section's other keys are the stage's own)."""
        return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section})


LOOP_DEFAULTS: dict[str, Any] = dataclasses.asdict(LoopSettings())


@dataclasses.dataclass
class TrainingRun:
    """What a call of :func:`run_training` did: the step reached of ``steps``, training seconds (over resumes), the
    logged history, the last validation metrics and whether the run is finished (else: resume later)."""

    step: int
    steps: int
    seconds: float
    history: list[dict[str, float]]
    validation: dict[str, float]
    finished: bool


def lr_at(step: int, settings: LoopSettings) -> float:
    """The learning rate of optimiser step ``step`` (0-based)."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    frac = min(1.0, (step - settings.warmup) / max(1, settings.steps - settings.warmup))
    return settings.lr * (settings.lr_floor + (1 - settings.lr_floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def _atomic_save(blob: dict[str, Any], path: pathlib.Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def run_training(
    model: torch.nn.Module,
    loss_fn: Callable[[np.random.Generator], tuple[torch.Tensor, dict[str, float]]],
    *,
    settings: LoopSettings,
    rng: np.random.Generator,
    device: torch.device,
    checkpoint: pathlib.Path,
    identity: Mapping[str, Any],
    validate: Callable[[], dict[str, float]] | None = None,
    name: str = "training",
    resume: bool = True,
    stop_after: int | None = None,
) -> TrainingRun:
    """Train ``model`` (already on ``device``) as ``settings`` say; checkpoints go to ``checkpoint`` and the log to
    ``log.jsonl`` beside it.

    Args:
        loss_fn: draws a batch with ``rng`` and returns the loss (a scalar tensor) and named parts for the log.
        rng: the generator every batch is drawn from (its state is checkpointed).
        identity: the configuration the checkpoint belongs to (plain YAML types; its :data:`RUNTIME_KEYS` are
            ignored); resuming a checkpoint written for another one raises ``ValueError``.
        validate: metrics of the current network (called every ``val_every`` steps and at the end).
        resume: continue from ``checkpoint`` when it exists (else start afresh and overwrite it).
        stop_after: leave after that many steps of this call, with a checkpoint (a later call resumes).
    """
    checkpoint = pathlib.Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    identity = plain_json({k: v for k, v in identity.items() if k not in RUNTIME_KEYS})
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    use_amp = bool(settings.amp) and device.type == "cuda"
    amp_dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    step, elapsed, history = 0, 0.0, []
    if resume and checkpoint.is_file():
        blob = torch.load(checkpoint, map_location=device, weights_only=True)
        if blob.get("identity") != identity:
            raise ValueError(f"{checkpoint} was written for another configuration; use another output folder, "
                             "remove it, or start afresh (--no-resume)")
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        scaler.load_state_dict(blob["scaler"])
        rng.bit_generator.state = blob["numpy_rng"]
        torch.set_rng_state(blob["torch_rng"])
        step, elapsed, history = int(blob["step"]), float(blob["seconds"]), list(blob["history"])
        log.info("%s: resumed from %s at step %d", name, checkpoint, step)
    last = settings.steps if stop_after is None else min(settings.steps, step + int(stop_after))
    validation: dict[str, float] = {}
    t0 = time.perf_counter() - elapsed
    running: dict[str, list[float]] = {}
    model.train()
    with (checkpoint.parent / "log.jsonl").open("a") as logfile:
        def record(entry: dict[str, Any]) -> None:
            history.append(entry)
            logfile.write(json.dumps({"name": name, **entry}) + "\n")
            logfile.flush()

        while step < last:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, settings)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                loss, parts = loss_fn(rng)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(opt)
            scaler.update()
            for key, value in {"loss": float(loss.item()), **parts}.items():
                running.setdefault(key, []).append(float(value))
            step += 1
            if step % settings.log_every == 0 or step == settings.steps:
                means = {k: float(np.mean(v)) for k, v in running.items()}
                running = {}
                log.info("%s step %d/%d %s lr %.2e (%.0f s)", name, step, settings.steps,
                         " ".join(f"{k}={v:.5f}" for k, v in means.items()), opt.param_groups[0]["lr"], time.perf_counter() - t0)
                record({"step": step, "seconds": round(time.perf_counter() - t0, 2), **means})
            if validate is not None and (step % settings.val_every == 0 or step == settings.steps):
                validation = validate()
                model.train()
                log.info("%s step %d validation %s", name, step, {k: round(v, 4) for k, v in validation.items()})
                record({"step": step, **{f"val_{k}": v for k, v in validation.items()}})
            if step % settings.checkpoint_every == 0 or step in (settings.steps, last):
                _atomic_save({
                    "identity": identity, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(), "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "step": step, "seconds": time.perf_counter() - t0, "history": history,
                }, checkpoint)
    if validate is not None and not validation and step >= settings.steps:
        validation = validate()  # a finished run resumed: its final metrics again
    model.eval()
    seconds = time.perf_counter() - t0
    if step < settings.steps:
        log.info("%s: stopped at step %d of %d after %.0f s; run again to resume", name, step, settings.steps, seconds)
    return TrainingRun(step=step, steps=settings.steps, seconds=seconds, history=history, validation=validation,
                       finished=step >= settings.steps)
