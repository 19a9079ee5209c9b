"""Restoration network: removes what remains of sparse-view artifacts after completion and FDK.

Slice-wise 2.5D: the network sees ``context`` adjacent axial slices and predicts a correction of the centre one.
Why axial: in a circular scan the missing angular samples leave streaks in the planes of the orbit, i.e. mostly
within axial slices, with a slow change along ``z``; a few neighbouring slices give the network the z-continuity of
anatomy to tell streaks from structure, at a fraction of the cost and memory of a 3D network (a 512³ volume is
restored slice batch by slice batch). The network is a residual U-Net (three scales); volumes are divided by
``scale`` (water, 0.02 mm⁻¹) on the way in and multiplied back on the way out, or, with ``normalise: volume``, by
the volume's own robust scale (:func:`volume_scale`, its 99th percentile), so that restoring ``c · v`` gives
``c ·`` the restoration of ``v`` (any attenuation calibration).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cbct._checks import check_fields
from cbct.learned.device import as_tensor, model_device

log = logging.getLogger(__name__)

__all__ = ["RestorationConfig", "RestorationNet", "restore_volume", "slice_stack", "volume_scale"]


@dataclasses.dataclass(frozen=True)
class RestorationConfig:
    """Sizes of the restoration network.

    Attributes:
        context: adjacent slices seen (odd): 3 means the slice and one on each side.
        channels: feature channels at full resolution (doubled at each of the two coarser scales).
        scale: attenuation divided out before the network, mm⁻¹ (``normalise: fixed``).
        normalise: ``"fixed"`` (divide by ``scale``) or ``"volume"`` (divide by each volume's
            :func:`volume_scale`: scale-equivariant).
    """

    context: int = 3
    channels: int = 24
    scale: float = 0.02
    normalise: str = "fixed"

    def __post_init__(self) -> None:
        if self.context < 1 or self.context % 2 == 0:
            raise ValueError(f"context must be a positive odd number of slices, got {self.context}")
        if self.channels < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.normalise not in ("fixed", "volume"):
            raise ValueError(f"normalise must be 'fixed' or 'volume', got {self.normalise!r}")

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

    weights_kind = "bbc_restore"  # cbct.learned.weights: the kind of its weights files
    config_class = RestorationConfig

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

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, context, H, W) mm⁻¹; ``scale`` (B,) mm⁻¹ divided out (``normalise: volume``: the volume's
        :func:`volume_scale`, required; ``fixed``: must be ``None``, ``config.scale`` is used)."""
        if x.ndim != 4 or x.shape[1] != self.config.context:
            raise ValueError(f"input must be (B, {self.config.context}, H, W), got {tuple(x.shape)}")
        if (scale is None) != (self.config.normalise == "fixed"):
            raise ValueError(f"scale must be given exactly when normalise is 'volume' (normalise={self.config.normalise!r})")
        s = self.config.scale if scale is None else scale.to(x.dtype).reshape(-1, 1, 1, 1)
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


def slice_stack(volume, indices, context: int):
    """(len(indices), context, y, x) stacks of axial slices around ``indices`` of a (z, y, x) volume (NumPy with
    NumPy indices, or torch with torch indices; edge slices mirrored)."""
    half = context // 2
    nz = volume.shape[0]
    lib = torch if isinstance(volume, torch.Tensor) else np
    offs = lib.arange(-half, half + 1) if lib is np else torch.arange(-half, half + 1, device=indices.device)
    idx = indices[:, None] + offs[None, :]
    idx = lib.abs(idx)
    idx = lib.where(idx > nz - 1, 2 * (nz - 1) - idx, idx)
    idx = lib.clip(idx, 0, nz - 1)
    return volume[idx]


def volume_scale(volume) -> float:
    """A volume's robust attenuation scale (mm⁻¹): the order statistic at 99 % of its values (NumPy, CuPy or
    torch; ``volume_scale(c v) = c volume_scale(v)`` for ``c > 0``), at least 1e-12."""
    v = volume if isinstance(volume, torch.Tensor) else torch.as_tensor(np.asarray(volume, np.float32))
    v = v.reshape(-1).float()
    k = int(0.99 * (v.numel() - 1))
    return max(float(torch.kthvalue(v, k + 1).values), 1e-12)


@torch.no_grad()
def restore_volume(
    net: RestorationNet,
    volume,
    *,
    batch: int = 8,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    as_numpy: bool = True,
):
    """Restore a (z, y, x) volume in mm⁻¹ slice by slice.

    ``volume`` may be NumPy, CuPy or torch; it is moved to the network's device once (a CuPy volume through DLPack,
    no host copy) and stays there. Returns a float32 NumPy volume of the same shape, or with ``as_numpy=False`` a
    torch tensor on the device.
    """
    dev = model_device(net, device)
    vol = as_tensor(volume, dev)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {tuple(vol.shape)}")
    net = net.to(dev).eval()
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    out = torch.empty_like(vol)
    scale = None if net.config.normalise == "fixed" else torch.tensor([volume_scale(vol)], device=dev)
    for start in range(0, vol.shape[0], batch):
        idx = np.arange(start, min(start + batch, vol.shape[0]))
        x = slice_stack(vol, torch.as_tensor(idx, device=dev), net.config.context)
        with torch.autocast(device_type=dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16, enabled=use_amp):
            y = net(x, None if scale is None else scale.expand(len(idx)))
        out[start:start + len(idx)] = y[:, 0].float()
    return out.cpu().numpy() if as_numpy else out
