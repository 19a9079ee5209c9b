"""Running an SBP-MAC network over whole volumes, and loading its weights (:mod:`cbct.learned.weights`)."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.nn import functional as F

from cbct.learned.device import as_tensor, model_device
from cbct.learned.weights import load_weights
from cbct.metrics import psnr, rmse, ssim
from cbct.resources import shipped_weights
from cbct.sbp_mac.model import SBPMAC, SBPMACConfig

log = logging.getLogger(__name__)

__all__ = [
    "SHIPPED", "SHIPPED_UNET", "correct_volume", "input_scale", "load_network", "slice_inputs",
]

SHIPPED = shipped_weights("sbp_mac.pt")
SHIPPED_UNET = shipped_weights("sbp_mac_unet.pt")  # the plain U-Net trained on the same data (evaluation baseline)
NORMALISED_LEVEL = 2.0  # the robust level of a normalised volume (water at ~1 for a typical dental scan)
ROBUST_PERCENTILE = 99.5
_MAX_QUANTILE_SAMPLES = 1 << 22


def load_network(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SBPMAC:
    """The SBP-MAC (or plain U-Net) network at ``path`` in eval mode on ``device``, its file's meta as ``.meta``;
    ``path=None`` loads the shipped ``cbct/models/sbp_mac.pt`` (:data:`SHIPPED`)."""
    return load_weights(path if path is not None else SHIPPED, SBPMAC, device=device)


def input_scale(cfg: SBPMACConfig, fdk) -> float:
    """The factor (1/mm⁻¹) that takes a volume's values to the network's units: ``cfg.intensity_scale``, or with
    ``cfg.normalise`` :data:`NORMALISED_LEVEL` over the volume's 99.5th percentile (``fdk``: the (Z, H, W) FDK image
    the network corrects, NumPy or torch)."""
    if not cfg.normalise:
        return float(cfg.intensity_scale)
    flat = (fdk if isinstance(fdk, torch.Tensor) else torch.from_numpy(np.asarray(fdk))).reshape(-1)
    flat = flat[:: max(1, flat.numel() // _MAX_QUANTILE_SAMPLES)].float()
    level = float(torch.quantile(flat, ROBUST_PERCENTILE / 100))
    if not np.isfinite(level) or level <= 0:
        return float(cfg.intensity_scale)
    return NORMALISED_LEVEL / level


def slice_inputs(
    fdk: torch.Tensor, segments: torch.Tensor | None, z: torch.Tensor, cfg: SBPMACConfig, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Network inputs for slices ``z`` (B,) of one volume: FDK (B, C, H, W) and segments (B, K, C, H, W), scaled.

    ``fdk`` is (Z, H, W) and ``segments`` (K, Z, H, W) in mm⁻¹; neighbours beyond the volume repeat the edge slice.
    ``scale``: the volume's :func:`input_scale` (default ``cfg.intensity_scale``).
    """
    scale = cfg.intensity_scale if scale is None else scale
    offsets = torch.arange(-cfg.n_neighbours, cfg.n_neighbours + 1, device=z.device)
    idx = (z[:, None] + offsets[None, :]).clamp(0, fdk.shape[0] - 1)  # (B, C)
    image = fdk[idx] * scale
    if segments is None or not cfg.use_segments:
        return image, None
    seg = segments[:, idx].permute(1, 0, 2, 3, 4) * (scale * segments.shape[0])  # (B, K, C, H, W)
    return image, seg


@torch.no_grad()
def correct_volume(
    model: SBPMAC,
    fdk,
    segments=None,
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    return_artifact: bool = False,
):
    """Run the network slice by slice (batched) over a volume.

    Args:
        model: an :class:`SBPMAC` (its ``cfg`` says whether it reads segments).
        fdk: (Z, H, W) FDK image in mm⁻¹ (NumPy, CuPy or torch).
        segments: (K, Z, H, W) segmented backprojection summing to ``fdk`` (needed when the model uses segments).
        batch_size: slices per forward pass.
        device: torch device; default: the model's.
        amp: bfloat16 autocast; default: on for CUDA.
        return_artifact: also return the encoder's artifact map (Z, H, W) in mm⁻¹ (zeros for the plain U-Net).

    Returns:
        The corrected (Z, H, W) float32 volume in mm⁻¹ as a torch tensor on ``device`` (and the artifact map).
    """
    cfg = model.config
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = model_device(model, device)
    model = model.to(dev).eval()
    vol = as_tensor(fdk, dev)
    if vol.ndim != 3:
        raise ValueError(f"fdk must be a (z, y, x) volume, got shape {tuple(vol.shape)}")
    seg = None
    if cfg.use_segments:
        if segments is None:
            raise ValueError("segments are required: the model reads the K-segment tensor")
        seg = as_tensor(segments, dev)
        if seg.ndim != 4 or seg.shape[0] != cfg.n_segments or tuple(seg.shape[1:]) != tuple(vol.shape):
            raise ValueError(
                f"segments must have shape ({cfg.n_segments}, {', '.join(map(str, vol.shape))}) for this model "
                f"(built for K = {cfg.n_segments}), got {tuple(seg.shape)}"
            )
    nz, h, w = vol.shape
    m = cfg.multiple
    ph, pw = (-h) % m, (-w) % m
    use_amp = (dev.type == "cuda") if amp is None else amp
    scale = input_scale(cfg, vol)
    out = torch.empty_like(vol)
    art = torch.zeros_like(vol) if return_artifact else None
    for start in range(0, nz, batch_size):
        z = torch.arange(start, min(start + batch_size, nz), device=dev)
        image, s = slice_inputs(vol, seg, z, cfg, scale)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
            if s is not None:
                b, k, c = s.shape[:3]
                s = F.pad(s.reshape(b, k * c, h, w), (0, pw, 0, ph), mode="replicate").reshape(b, k, c, h + ph, w + pw)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            res = model(image, s)
        pred, a = res.image, res.artifact
        out[start:start + len(z)] = pred[:, 0, :h, :w].float() / scale
        if art is not None and a is not None:
            art[start:start + len(z)] = a[:, 0, :h, :w].float() / scale
    return (out, art) if return_artifact else out


def volume_metrics(x, ref, mask: np.ndarray | None = None) -> dict[str, float]:
    """PSNR (dB), SSIM (2D per axial slice) and RMSE (mm⁻¹) of ``x`` against ``ref`` inside ``mask``; the data
    range is the reference's range inside the mask."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ref = np.asarray(ref, dtype=np.float32)
    inside = ref[np.broadcast_to(mask, ref.shape)] if mask is not None else ref
    data_range = float(inside.max() - inside.min())
    return {
        "psnr": psnr(x, ref, data_range=data_range, mask=mask),
        "ssim": ssim(x, ref, data_range=data_range, mask=mask),
        "rmse": rmse(x, ref, mask=mask),
    }
