"""SBP-MAC network: a degradation encoder over the K-segment tensor modulating a U-Net generator (2.5D).

Input of one sample (one axial slice ``z`` and its neighbours, ``C = 2 n + 1`` slices ``z - n .. z + n``):

- ``image``: (B, C, H, W) the FDK slices, times the fixed ``intensity_scale`` (1/mm⁻¹) so water is ~1;
- ``segments``: (B, K, C, H, W) the K limited-angle sub-images of the same slices, times ``K * intensity_scale``
  (each segment alone then has the image's scale: the full FDK image is their mean).

Degradation encoder ``E``: a stem shared by all segments (each segment's C slices to ``m`` features, the same
weights for every segment), a 1×1 convolution that mixes the K segments' features (it knows their order, i.e. their
view angles, so it can compare the poses the segments saw), then one residual block per scale and a strided
convolution between scales: spatially varying degradation features ``f_l`` at full, 1/2, 1/4, ... resolution.
An artifact head on ``f_0`` predicts the artifact map ``a_hat`` (B, 1, H, W) of the centre slice (see the loss).

Generator ``G``: a residual U-Net on the FDK slices; its skip connection at scale ``l`` (and its bottleneck) is
modulated by spatial feature transforms (SFT): ``skip * (1 + gamma_l(f_l)) + beta_l(f_l)`` with ``gamma_l``,
``beta_l`` small convolution stacks whose last layer starts at zero (identity at initialisation). The output is
the centre FDK slice plus the predicted correction.

Segment alignment (``align_segments=True``): a head on the encoder's 1/4-scale features predicts one smooth in-plane
displacement field per segment (B, K, 2, H, W after bilinear upsampling, in pixels, zero at initialisation); every
segment is warped back by its field and the aligned segments are averaged: a motion-compensated FDK image. This
uses the physics of segmented backprojection: a limited-angle sub-image of an object that moved by ``d`` during that
segment is (for in-plane motion, exactly in parallel beam) the static sub-image moved by ``d``. The generator then
reads the FDK slices and the aligned slices, and its residual is added to the aligned centre slice.

With ``use_segments=False`` the same generator runs alone on the FDK slices (no encoder, no modulation): the plain
U-Net baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from cbct._checks import check_fields

__all__ = ["SBPMAC", "SFT", "ResBlock", "SBPMACConfig", "SBPMACOutput", "warp"]


@dataclasses.dataclass(frozen=True)
class SBPMACConfig:
    """Architecture of :class:`SBPMAC`.

    Attributes:
        n_segments: K, number of angular segments the network was built for.
        n_neighbours: n, neighbouring slices on each side (C = 2n + 1 input slices).
        channels: generator channels per scale (its length is the number of scales; the input's H and W must be
            divisible by ``2 ** (len(channels) - 1)``).
        encoder_channels: degradation-encoder channels per scale (same length as ``channels``).
        segment_features: m, features per segment from the shared stem.
        use_segments: False for the plain U-Net baseline (no encoder, no modulation).
        align_segments: warp the segments by predicted displacement fields before the generator (needs segments).
        intensity_scale: multiplies mm⁻¹ values before the network (50 maps water, ~0.02 mm⁻¹, to ~1).
        normalise: scale each volume by its own robust level instead (:func:`cbct.sbp_mac.inference.input_scale`:
            the 99.5th percentile of its FDK image maps to 2), and the output back: the network then does not
            depend on the attenuation scale of the scan.
    """

    n_segments: int = 8
    n_neighbours: int = 1
    channels: tuple[int, ...] = (16, 32, 64)
    encoder_channels: tuple[int, ...] = (16, 32, 64)
    segment_features: int = 4
    use_segments: bool = True
    intensity_scale: float = 50.0
    align_segments: bool = False
    normalise: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        if self.n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")
        if self.n_neighbours < 0:
            raise ValueError(f"n_neighbours must be >= 0, got {self.n_neighbours}")
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels must list >= 2 positive channel counts, got {self.channels}")
        if len(self.encoder_channels) != len(self.channels) or min(self.encoder_channels) < 1:
            raise ValueError(
                f"encoder_channels must list {len(self.channels)} positive counts (one per scale), got {self.encoder_channels}"
            )
        if self.segment_features < 1 or self.intensity_scale <= 0:
            raise ValueError("segment_features and intensity_scale must be positive")
        if self.align_segments and not self.use_segments:
            raise ValueError("align_segments needs use_segments=True")

    @property
    def n_slices(self) -> int:
        return 2 * self.n_neighbours + 1

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        d["encoder_channels"] = list(self.encoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SBPMACConfig:
        d = check_fields(cls, d, "model config keys")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class SBPMACOutput(NamedTuple):
    """What :class:`SBPMAC` returns (scaled units, (B, 1, H, W) each): the corrected centre slice, the encoder's
    artifact map, the aligned-segment centre slice and the displacement fields (B, K, 2, H, W) in pixels (``None``
    where the model has no encoder or no alignment)."""

    image: torch.Tensor
    artifact: torch.Tensor | None
    aligned: torch.Tensor | None
    flow: torch.Tensor | None = None


def warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``images`` (N, C, H, W) at ``x + flow`` (flow (N, 2, H, W): (dx, dy) in pixels), bilinear, edges
    repeated."""
    h, w = images.shape[-2:]
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=images.device, dtype=images.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx + flow[:, 0] * (2 / w), gy + flow[:, 1] * (2 / h)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class ResBlock(nn.Module):
    """Two 3×3 convolutions with a LeakyReLU between, plus the identity."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), _act(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SFT(nn.Module):
    """Spatial feature transform: ``x * (1 + gamma(f)) + beta(f)``; starts as the identity."""

    def __init__(self, feat_ch: int, ch: int) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(feat_ch, ch, 3, padding=1), _act())
        self.gamma = nn.Conv2d(ch, ch, 3, padding=1)
        self.beta = nn.Conv2d(ch, ch, 3, padding=1)
        for conv in (self.gamma, self.beta):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        h = self.shared(feat)
        return x * (1 + self.gamma(h)) + self.beta(h)


class DegradationEncoder(nn.Module):
    """K-segment tensor (B, K, C, H, W) → degradation features at every scale, and the artifact map."""

    def __init__(self, cfg: SBPMACConfig) -> None:
        super().__init__()
        m, k, ch = cfg.segment_features, cfg.n_segments, cfg.encoder_channels
        self.stem = nn.Sequential(nn.Conv2d(cfg.n_slices, m, 3, padding=1), _act())  # shared by the segments
        self.mix = nn.Sequential(nn.Conv2d(k * m + cfg.n_slices, ch[0], 1), _act(), ResBlock(ch[0]))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch[i - 1], ch[i], 3, stride=2, padding=1), _act(), ResBlock(ch[i]))
            for i in range(1, len(ch))
        )
        self.artifact = nn.Sequential(nn.Conv2d(ch[0], ch[0], 3, padding=1), _act(), nn.Conv2d(ch[0], 1, 3, padding=1))

    def forward(self, segments: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        b, k, c, h, w = segments.shape
        per_segment = self.stem(segments.reshape(b * k, c, h, w)).reshape(b, -1, h, w)
        mean = segments.mean(dim=1)  # the FDK slices themselves
        feats = [self.mix(torch.cat([per_segment, mean], dim=1))]
        for down in self.down:
            feats.append(down(feats[-1]))
        return feats, self.artifact(feats[0])


class SBPMAC(nn.Module):
    """Degradation encoder + SFT-modulated residual U-Net (or the plain U-Net with ``use_segments=False``)."""

    weights_kind = "sbp_mac"  # cbct.learned.weights: the kind of its weights files
    config_class = SBPMACConfig

    def __init__(self, cfg: SBPMACConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or SBPMACConfig()
        ch = cfg.channels
        in_ch = cfg.n_slices * (2 if cfg.align_segments else 1)
        self.inc = nn.Sequential(nn.Conv2d(in_ch, ch[0], 3, padding=1), _act(), ResBlock(ch[0]))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch[i - 1], ch[i], 3, stride=2, padding=1), _act(), ResBlock(ch[i]))
            for i in range(1, len(ch))
        )
        self.bottleneck = ResBlock(ch[-1])
        self.up = nn.ModuleList(nn.Conv2d(ch[i], ch[i - 1], 3, padding=1) for i in range(len(ch) - 1, 0, -1))
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * ch[i - 1], ch[i - 1], 3, padding=1), _act(), ResBlock(ch[i - 1]))
            for i in range(len(ch) - 1, 0, -1)
        )
        self.out = nn.Conv2d(ch[0], 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if cfg.use_segments:
            self.encoder = DegradationEncoder(cfg)
            self.sft = nn.ModuleList(SFT(e, c) for e, c in zip(cfg.encoder_channels, ch))
        if cfg.align_segments:
            self.flow_level = min(2, len(ch) - 1)
            e = cfg.encoder_channels[self.flow_level]
            self.flow = nn.Sequential(nn.Conv2d(e, e, 3, padding=1), _act(), nn.Conv2d(e, 2 * cfg.n_segments, 3, padding=1))
            nn.init.zeros_(self.flow[-1].weight)
            nn.init.zeros_(self.flow[-1].bias)
        if not cfg.use_segments:
            self.encoder = None
            self.sft = None

    def forward(self, image: torch.Tensor, segments: torch.Tensor | None = None) -> SBPMACOutput:
        """Args: ``image`` (B, C, H, W), ``segments`` (B, K, C, H, W) (scaled as in the module notes).

        Returns: :class:`SBPMACOutput` (corrected centre slice, artifact map, aligned centre slice).
        """
        cfg = self.config
        if image.ndim != 4 or image.shape[1] != cfg.n_slices:
            raise ValueError(f"image must have shape (B, {cfg.n_slices}, H, W), got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % cfg.multiple or w % cfg.multiple:
            raise ValueError(f"image height and width must be multiples of {cfg.multiple}, got {h} x {w}")
        feats: Sequence[torch.Tensor] | None = None
        artifact = None
        if cfg.use_segments:
            expected = (image.shape[0], cfg.n_segments, cfg.n_slices, h, w)
            if segments is None or tuple(segments.shape) != expected:
                got = None if segments is None else tuple(segments.shape)
                raise ValueError(f"segments must have shape {expected}, got {got}")
            feats, artifact = self.encoder(segments)
        n = cfg.n_neighbours
        base = image[:, n: n + 1]
        gen_in = image
        aligned = flow = None
        if cfg.align_segments:
            b, k, c = segments.shape[:3]
            flow = F.interpolate(self.flow(feats[self.flow_level]), size=(h, w), mode="bilinear", align_corners=False)
            warped = warp(segments.reshape(b * k, c, h, w), flow.reshape(b * k, 2, h, w)).reshape(b, k, c, h, w)
            aligned_all = warped.mean(dim=1)
            gen_in = torch.cat([image, aligned_all], dim=1)
            base = aligned = aligned_all[:, n: n + 1]
        skips = []
        x = self.inc(gen_in)
        for i, down in enumerate(self.down):
            skips.append(self._modulate(x, feats, i))
            x = down(x)
        x = self._modulate(self.bottleneck(x), feats, len(self.down))
        for up, fuse in zip(self.up, self.fuse):
            skip = skips.pop()
            x = up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            x = fuse(torch.cat([x, skip], dim=1))
        if flow is not None:
            flow = flow.reshape(b, k, 2, h, w)
        return SBPMACOutput(base + self.out(x), artifact, aligned, flow)

    def _modulate(self, x: torch.Tensor, feats: Sequence[torch.Tensor] | None, level: int) -> torch.Tensor:
        return x if feats is None else self.sft[level](x, feats[level])
