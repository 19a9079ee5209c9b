"""SBP-MAC training loss: pixel loss plus an artifact-consistency term.

With ``x`` the centre FDK slice of the motion-corrupted (noisy) scan, ``y`` the motion-free reference slice,
``y_hat = G(x, E(S))`` the corrected slice and ``a_hat = h(E(S))`` the artifact map that the degradation encoder's
head reads off the segment tensor ``S`` (all in the network's scaled units, water ~1):

``L = L_pix + lambda_ac * L_ac + lambda_seg * L_seg + lambda_flow * L_flow``

- ``L_pix = mean |y_hat - y|`` (L1 over the pixels of the batch);
- ``L_ac = mean |a_hat - (x - y)|``: the artifact the encoder sees in the K segments must be consistent with the
  artifact actually present in the FDK image (the FDK image minus the motion-free reference: motion blur, ghosts,
  streaks and noise).

- ``L_seg = mean |s_hat - y|`` (models with segment alignment only): ``s_hat`` is the centre slice of the mean of
  the K segments after each was warped back by the displacement the encoder estimated for it. The segments, once
  realigned, must add up to the motion-free image: consistency between the K partial images and the reference,
  which supervises the motion estimate directly (without it the displacement fields learn only through the
  generator).

- ``L_flow = mean |d_hat - d|`` (training only, models with alignment): the displacement fields the encoder
  predicts for the K segments against the true in-plane displacement of every pixel under each segment's mean pose,
  known in simulation (:func:`cbct.sbp_mac.data.displacement_field`). At inference no motion is given.

Why ``L_ac`` helps: without ``L_ac`` the encoder learns only through the SFT modulation, a weak, indirect signal that a
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
    """Weights of the loss terms: ``pixel`` (L_pix), ``artifact`` (lambda_ac), ``segment`` (lambda_seg) and
    ``flow`` (lambda_flow)."""

    pixel: float = 1.0
    artifact: float = 0.5
    segment: float = 0.0
    flow: float = 0.0

    def __post_init__(self) -> None:
        values = dataclasses.asdict(self)
        if any(v < 0 for v in values.values()):
            raise ValueError(f"loss weights must be >= 0, got {values}")
        if not any(v > 0 for v in values.values()):
            raise ValueError("at least one loss weight must be positive")


def sbp_mac_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    fdk_centre: torch.Tensor,
    artifact: torch.Tensor | None,
    weights: LossWeights = LossWeights(),
    aligned: torch.Tensor | None = None,
    flow: torch.Tensor | None = None,
    flow_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and its parts (as floats, for logging).

    Args:
        prediction: (B, 1, H, W) corrected slices ``y_hat``.
        target: (B, 1, H, W) motion-free reference slices ``y``.
        fdk_centre: (B, 1, H, W) the input FDK centre slices ``x``.
        artifact: (B, 1, H, W) the encoder's artifact map ``a_hat``, or ``None`` (plain U-Net: no ``L_ac``).
        weights: the loss weights.
        aligned: (B, 1, H, W) the aligned-segment slices ``s_hat``, or ``None`` (no ``L_seg``).
        flow, flow_target: (B, K, 2, H, W) predicted and true displacement fields in pixels, or ``None`` (no ``L_flow``).
    """
    if (flow is None) != (flow_target is None):
        raise ValueError("give both flow and flow_target, or neither")
    if flow is not None and flow.shape != flow_target.shape:
        raise ValueError(f"flow_target must have the flow's shape {tuple(flow.shape)}, got {tuple(flow_target.shape)}")
    checks = [("target", target), ("fdk_centre", fdk_centre), ("artifact", artifact), ("aligned", aligned)]
    for name, t in checks:
        if t is None:
            continue
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
    if aligned is not None:
        seg = (aligned - target).abs().mean()
        parts["segment"] = float(seg.detach())
        if weights.segment > 0:
            total = total + weights.segment * seg
    if flow is not None:
        fl = (flow - flow_target).abs().mean()
        parts["flow"] = float(fl.detach())
        if weights.flow > 0:
            total = total + weights.flow * fl
    parts["total"] = float(total.detach())
    return total, parts
