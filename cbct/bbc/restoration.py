"""Restoration network: removes what remains of sparse-view artifacts after completion and FDK.

Slice-wise 2.5D: the network sees ``context`` adjacent axial slices and predicts a correction of the centre one.
Why axial: in a circular scan the missing angular samples leave streaks in the planes of the orbit, i.e. mostly
within axial slices, with a slow change along ``z``; a few neighbouring slices give the network the z-continuity of
anatomy to tell streaks from structure, at a fraction of the cost and memory of a 3D network (a 512³ volume is
restored slice batch by slice batch). The network is a residual U-Net (three scales); volumes are divided by
``scale`` (water, 0.02 mm⁻¹) on the way in and multiplied back on the way out.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cbct._checks import check_fields

log = logging.getLogger(__name__)

__all__ = ["RestorationConfig", "RestorationNet", "restore_volume", "slice_stack"]


@dataclasses.dataclass(frozen=True)
class RestorationConfig:
    """Sizes of the restoration network.

    Attributes:
        context: adjacent slices seen (odd): 3 means the slice and one on each side.
        channels: feature channels at full resolution (doubled at each of the two coarser scales).
        scale: attenuation divided out before the network, mm⁻¹.
    """

    context: int = 3
    channels: int = 24
    scale: float = 0.02

    def __post_init__(self) -> None:
        if self.context < 1 or self.context % 2 == 0:
            raise ValueError(f"context must be a positive odd number of slices, got {self.context}")
        if self.channels < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    @classmethod
    def from_dict(cls, d: dict) -> RestorationConfig:
        return cls(**check_fields(cls, d, "restoration model settings"))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
    )


class RestorationNet(nn.Module):
    """Residual 2.5D U-Net: (B, context, H, W) slices in mm⁻¹ → (B, 1, H, W) restored centre slice in mm⁻¹."""

    def __init__(self, config: RestorationConfig | None = None) -> None:
        super().__init__()
        self.config = config or RestorationConfig()
        c = self.config.channels
        self.e0 = _block(self.config.context, c)
        self.e1 = _block(c, 2 * c)
        self.e2 = _block(2 * c, 4 * c)
        self.d1 = _block(4 * c + 2 * c, 2 * c)
        self.d0 = _block(2 * c + c, c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        with torch.no_grad():  # start as the identity
            self.out.weight.mul_(0.01)
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.context:
            raise ValueError(f"input must be (B, {self.config.context}, H, W), got {tuple(x.shape)}")
        s = self.config.scale
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        xn = F.pad(x / s, (0, pw, 0, ph), mode="replicate") if ph or pw else x / s
        e0 = self.e0(xn)
        e1 = self.e1(F.avg_pool2d(e0, 2))
        e2 = self.e2(F.avg_pool2d(e1, 2))
        d1 = self.d1(torch.cat([F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        d0 = self.d0(torch.cat([F.interpolate(d1, size=e0.shape[-2:], mode="bilinear", align_corners=False), e0], 1))
        centre = xn[:, self.config.context // 2: self.config.context // 2 + 1]
        return ((centre + self.out(d0)) * s)[..., :h, :w]


def slice_stack(volume: np.ndarray, indices: np.ndarray, context: int) -> np.ndarray:
    """(len(indices), context, y, x) stacks of axial slices around ``indices`` of a (z, y, x) volume
    (edge slices mirrored)."""
    half = context // 2
    nz = volume.shape[0]
    offs = np.arange(-half, half + 1)
    idx = np.asarray(indices)[:, None] + offs[None, :]
    idx = np.abs(idx)
    idx = np.where(idx > nz - 1, 2 * (nz - 1) - idx, idx)
    idx = np.clip(idx, 0, nz - 1)
    return volume[idx]


@torch.no_grad()
def restore_volume(
    net: RestorationNet,
    volume,
    *,
    batch: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
) -> np.ndarray:
    """Restore a (z, y, x) volume in mm⁻¹ slice by slice; returns a float32 NumPy volume of the same shape."""
    vol = volume.get() if hasattr(volume, "get") and hasattr(volume, "__cuda_array_interface__") else np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {vol.shape}")
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    net = net.to(dev).eval()
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    out = np.empty_like(vol)
    for start in range(0, vol.shape[0], batch):
        idx = np.arange(start, min(start + batch, vol.shape[0]))
        x = torch.from_numpy(slice_stack(vol, idx, net.config.context)).to(dev)
        with torch.autocast(device_type=dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=use_amp):
            y = net(x)
        out[idx] = y[:, 0].float().cpu().numpy()
    return out
