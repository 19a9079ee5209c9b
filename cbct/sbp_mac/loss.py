"""SBP-MAC training loss: pixel loss plus an artifact-consistency term.

With ``x`` the centre FDK slice of the motion-corrupted (noisy) scan, ``y`` the motion-free reference slice,
``y_hat = G(x, E(S))`` the corrected slice and ``a_hat = h(E(S))`` the artifact map that the degradation encoder's
head reads off the segment tensor ``S`` (all in the network's scaled units, water ~1):

``L = L_pix + lambda_ac * L_ac``

- ``L_pix = mean |y_hat - y|`` (L1 over the pixels of the batch);
- ``L_ac = mean |a_hat - (x - y)|``: the artifact the encoder sees in the K segments must be consistent with the
  artifact actually present in the FDK image (the FDK image minus the motion-free reference: motion blur, ghosts,
  streaks and noise).

Why it helps: without ``L_ac`` the encoder learns only through the SFT modulation, a weak, indirect signal that a
small training budget may leave unused (the generator then falls back to a plain U-Net). ``L_ac`` gives the encoder
direct, spatially resolved supervision: its finest features must say where and by how much the image is corrupted,
which is what the modulation of the skips needs. The plain U-Net has no encoder and trains with ``L_pix`` only.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["LossWeights", "sbp_mac_loss"]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms: ``pixel`` (L_pix) and ``artifact`` (lambda_ac)."""

    pixel: float = 1.0
    artifact: float = 0.5

    def __post_init__(self) -> None:
        if self.pixel < 0 or self.artifact < 0:
            raise ValueError(f"loss weights must be >= 0, got pixel={self.pixel}, artifact={self.artifact}")
        if self.pixel == 0 and self.artifact == 0:
            raise ValueError("at least one loss weight must be positive")


def sbp_mac_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    fdk_centre: torch.Tensor,
    artifact: torch.Tensor | None,
    weights: LossWeights = LossWeights(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and its parts (as floats, for logging).

    Args:
        prediction: (B, 1, H, W) corrected slices ``y_hat``.
        target: (B, 1, H, W) motion-free reference slices ``y``.
        fdk_centre: (B, 1, H, W) the input FDK centre slices ``x``.
        artifact: (B, 1, H, W) the encoder's artifact map ``a_hat``, or ``None`` (plain U-Net: no ``L_ac``).
        weights: the loss weights.
    """
    for name, t in (("target", target), ("fdk_centre", fdk_centre)) + ((("artifact", artifact),) if artifact is not None else ()):
        if t.shape != prediction.shape:
            raise ValueError(f"{name} must have the prediction's shape {tuple(prediction.shape)}, got {tuple(t.shape)}")
    pix = (prediction - target).abs().mean()
    total = weights.pixel * pix
    parts = {"pixel": float(pix.detach())}
    if artifact is not None:
        ac = (artifact - (fdk_centre - target)).abs().mean()
        parts["artifact"] = float(ac.detach())
        if weights.artifact > 0:
            total = total + weights.artifact * ac
    parts["total"] = float(total.detach())
    return total, parts
