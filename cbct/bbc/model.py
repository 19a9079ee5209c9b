"""Projection completion network: synthesises a missing view between two acquired neighbouring views.

The projections of a scan are treated as a video over the gantry angle. For a pair of acquired views ``a`` and ``b``
and a fraction ``t`` in [0, 1] between them:

1. **Feature pyramid**: a shared convolutional encoder of the high-passed views (local mean removed, so features
   describe structure rather than the attenuation offset) gives features at 1/2, 1/4 and 1/8 of the detector size.
2. **Bidirectional all-pairs correlation** at 1/8 (or 1/4, ``corr_stride``): the cosine similarities of every
   feature vector of ``a`` with every one of ``b`` (``C_ab``) and its transpose (``C_ba``), each pooled into a pyramid of
   ``corr_levels`` scales (RAFT's 4D correlation pyramid), so a lookup sees both fine and coarse displacements.
3. **Iterative flow refinement** (small RAFT): a convolutional GRU, shared by both directions (run as one batch),
   updates the flows ``F_ab`` and ``F_ba`` from correlation lookups around the current flow, ``iters`` times.
4. **Flows from the missing view**: the flows at ``t`` to both neighbours start from the quadratic-motion estimate
   ``F_ta = -(1 - t) t F_ab + t² F_ba``, ``F_tb = (1 - t)² F_ab - t (1 - t) F_ba``; a full-resolution U-Net that sees
   ``t``, both views and both warped views predicts corrections of both flows, a fusion mask, a residual and
   (``gate``) a per-pixel gate ``g`` between linear interpolation and the flow-based fusion, which lets it fall back
   to the former where no single motion explains a pixel (in a projection, structures at different depths move
   differently between views: front and back teeth overlap and move in opposite directions).
5. **Warping and fusion**: both views are backward-warped (``grid_sample``) with their flows and fused with weights
   ``(1 - t) V`` and ``t (1 - V)`` (``V`` the mask); with the gate, ``g`` times that plus ``1 - g`` times linear
   interpolation; finally ``t (1 - t) R`` (``R`` the residual) is added.

The corrections are multiplied by ``t`` (flow to ``a``), ``1 - t`` (flow to ``b``) and ``t (1 - t)`` (residual), so
``t = 0`` returns view ``a`` and ``t = 1`` view ``b`` exactly (to interpolation rounding); with zero flows and an
undecided mask (``V = 1/2``) the network is linear interpolation, which is how it starts training. With
``residual`` the gate is ``clamp(x, 0, 1)`` of a head output ``x``: the output is linear interpolation plus a learned
correction, and a head that outputs zero gives linear interpolation exactly whatever the flows.

Projections are line integrals; each pair is divided by its mean value (at least ``min_scale``) before the network
and the result multiplied back, so the network is independent of the attenuation scale (scale-equivariant above
``min_scale``). Running it over a scan: :mod:`cbct.bbc.inference`.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from cbct._checks import check_fields

log = logging.getLogger(__name__)

__all__ = [
    "FlowCompletionConfig",
    "FlowCompletionNet",
    "backward_warp",
]


@dataclasses.dataclass(frozen=True)
class FlowCompletionConfig:
    """Sizes of the completion network.

    Attributes:
        channels: feature channels of the pyramid at 1/2, 1/4 and 1/8 resolution.
        corr_levels: scales of the correlation pyramid (each pools the previous by 2).
        corr_radius: lookup radius (in cells of each scale) around the current flow.
        hidden: channels of the GRU state.
        iters: flow refinement iterations.
        refine_channels: channels of the full-resolution fusion U-Net.
        min_scale: smallest normalisation scale (line-integral units).
        corr_stride: resolution of the correlation volumes and the flow iterations, 4 (1/4, finer flows, 16× the
            memory) or 8 (1/8, as RAFT).
        gate: the fusion U-Net also predicts a per-pixel gate ``g`` in [0, 1] between linear interpolation
            (``g = 0``) and the flow-based fusion (``g = 1``), for pixels that no single motion explains (layers at
            different depths move differently between views).
        residual: the output is linear interpolation plus a learned correction,
            ``lin + g (blend - lin) + t (1 - t) R`` with the gate ``g = clamp(x, 0, 1)`` of a head output ``x``
            (not a sigmoid): a fusion head that outputs zero (no flow corrections, no gate, no residual) gives
            linear interpolation exactly, whatever the flows. Needs ``gate``.
    """

    channels: tuple[int, int, int] = (16, 32, 48)
    corr_levels: int = 3
    corr_radius: int = 3
    hidden: int = 48
    iters: int = 4
    refine_channels: int = 16
    min_scale: float = 0.1
    corr_stride: int = 8
    gate: bool = False
    residual: bool = False

    def __post_init__(self) -> None:
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be 3 positive integers, got {self.channels}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        for name in ("corr_levels", "hidden", "iters", "refine_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if int(self.corr_radius) < 0:
            raise ValueError(f"corr_radius must be >= 0, got {self.corr_radius}")
        if not self.min_scale > 0:
            raise ValueError(f"min_scale must be positive, got {self.min_scale}")
        if self.corr_stride not in (4, 8):
            raise ValueError(f"corr_stride must be 4 or 8, got {self.corr_stride}")
        if self.residual and not self.gate:
            raise ValueError("residual needs gate (the correction to linear interpolation is gated)")

    @classmethod
    def from_dict(cls, d: dict) -> FlowCompletionConfig:
        d = check_fields(cls, d, "completion model settings")
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.1, inplace=True))


def _high_pass(x: torch.Tensor, size: int = 15) -> torch.Tensor:
    """``x`` minus its local mean over ``size``² pixels (edges replicated): the structure the views share, without
    the slowly varying attenuation offset that would otherwise dominate every feature."""
    pad = size // 2
    return x - F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size, stride=1)


def _pixel_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """(1, 2, h, w) pixel coordinates ``(x, y)``."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])[None]


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warping: ``out(p) = image(p + flow(p))``, bilinear, edges replicated.

    Args:
        image: (B, C, H, W).
        flow: (B, 2, H, W) displacements ``(dx, dy)`` in pixels (x along the last axis).
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"image must be (B, C, H, W) and flow (B, 2, H, W), got {tuple(image.shape)} and {tuple(flow.shape)}")
    if image.shape[0] != flow.shape[0] or image.shape[2:] != flow.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and flow {tuple(flow.shape)} must share batch and spatial size")
    b, _, h, w = image.shape
    coords = _pixel_grid(h, w, flow.device, flow.dtype) + flow
    gx = 2.0 * coords[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * coords[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)


class _Pyramid(nn.Module):
    """Shared encoder: features at 1/2, 1/4 and 1/8 of the input size."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.l1 = nn.Sequential(_conv(1, c1, 2), _conv(c1, c1))
        self.l2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.l3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.l1(4.0 * _high_pass(x))
        f2 = self.l2(f1)
        return [f1, f2, self.l3(f2)]


class _CorrPyramid:
    """All-pairs correlation of two feature maps, pooled to several scales; lookups around given positions."""

    def __init__(self, corr: torch.Tensor, levels: int, radius: int) -> None:
        # corr: (B, H, W, H2, W2), source pixel first
        b, h, w, h2, w2 = corr.shape
        c = corr.reshape(b * h * w, 1, h2, w2)
        self.pyramid = [c]
        for _ in range(levels - 1):
            if min(c.shape[-2:]) < 2:
                break
            c = F.avg_pool2d(c, 2, stride=2)
            self.pyramid.append(c)
        self.radius = radius
        self.shape = (b, h, w)
        self.levels = levels

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Correlation around ``coords`` (B, 2, H, W) (target pixel positions ``(x, y)``): (B, levels·(2r+1)², H, W)."""
        b, h, w = self.shape
        r = self.radius
        d = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        delta = torch.stack([dx, dy], dim=-1).reshape(1, 2 * r + 1, 2 * r + 1, 2)
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for i in range(self.levels):
            if i < len(self.pyramid):
                c = self.pyramid[i]
                hh, ww = c.shape[-2:]
                pos = centre / 2**i + delta
                grid = torch.stack([2 * pos[..., 0] / max(ww - 1, 1) - 1, 2 * pos[..., 1] / max(hh - 1, 1) - 1], dim=-1)
                s = F.grid_sample(c, grid.to(c.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
            else:  # the detector is too small for this scale
                s = coords.new_zeros((b * h * w, 1, 2 * r + 1, 2 * r + 1))
            out.append(s.reshape(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


class _ConvGRU(nn.Module):
    def __init__(self, hidden: int, inp: int) -> None:
        super().__init__()
        self.zr = nn.Conv2d(hidden + inp, 2 * hidden, 3, padding=1)
        self.q = nn.Conv2d(hidden + inp, hidden, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z, r = torch.sigmoid(self.zr(hx)).chunk(2, dim=1)
        q = torch.tanh(self.q(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class _UpdateBlock(nn.Module):
    """One refinement step: motion features from correlation and flow, GRU, flow update."""

    def __init__(self, corr_channels: int, hidden: int, context: int) -> None:
        super().__init__()
        self.corr = nn.Sequential(nn.Conv2d(corr_channels, 64, 1), nn.ReLU(inplace=True))
        self.flow = nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.motion = nn.Sequential(nn.Conv2d(64 + 16, 46, 3, padding=1), nn.ReLU(inplace=True))
        self.gru = _ConvGRU(hidden, 48 + context)
        self.head = nn.Sequential(nn.Conv2d(hidden, 48, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(48, 2, 3, padding=1))
        with torch.no_grad():  # start near zero flow (linear interpolation)
            self.head[-1].weight.mul_(0.01)
            self.head[-1].bias.zero_()

    def forward(self, h, corr, flow, ctx):
        m = self.motion(torch.cat([self.corr(corr), self.flow(flow)], dim=1))
        h = self.gru(h, torch.cat([m, flow, ctx], dim=1))
        return h, self.head(h)


class _FusionUNet(nn.Module):
    """Full-resolution U-Net: flow corrections (4), fusion mask logit (1) and residual (1) for the view at ``t``."""

    def __init__(self, inp: int, c: int, out: int = 6) -> None:
        super().__init__()
        self.e0 = nn.Sequential(_conv(inp, c), _conv(c, c))
        self.e1 = nn.Sequential(_conv(c, 2 * c, 2), _conv(2 * c, 2 * c))
        self.e2 = nn.Sequential(_conv(2 * c, 4 * c, 2), _conv(4 * c, 4 * c))
        self.d1 = nn.Sequential(_conv(4 * c + 2 * c, 2 * c), _conv(2 * c, 2 * c))
        self.d0 = nn.Sequential(_conv(2 * c + c, c), _conv(c, c))
        self.out = nn.Conv2d(c, out, 3, padding=1)
        with torch.no_grad():
            self.out.weight.mul_(0.01)
            self.out.bias.zero_()
            # a gate channel (out > 6) starts at 1/2: half linear interpolation, half flow-based

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.e0(x)
        e1 = self.e1(e0)
        e2 = self.e2(e1)
        d1 = self.d1(torch.cat([F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], dim=1))
        d0 = self.d0(torch.cat([F.interpolate(d1, size=e0.shape[-2:], mode="bilinear", align_corners=False), e0], dim=1))
        return self.out(d0)


class FlowCompletionNet(nn.Module):
    """Bidirectional flow-guided view synthesis (see the module notes). Views are (B, 1, H, W) line integrals."""

    MULTIPLE = 8  # inputs are padded to a multiple of this
    weights_kind = "bbc_flow"  # cbct.learned.weights: the kind of its weights files
    config_class = FlowCompletionConfig

    def __init__(self, config: FlowCompletionConfig | None = None) -> None:
        super().__init__()
        self.config = config or FlowCompletionConfig()
        cfg = self.config
        c1, c2, c3 = cfg.channels
        self.encoder = _Pyramid(cfg.channels)
        cc = c3 if cfg.corr_stride == 8 else c2
        self.corr_proj = nn.Conv2d(cc, cc, 1)
        self.context = nn.Conv2d(cc, 2 * cfg.hidden, 1)
        corr_channels = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.update = _UpdateBlock(corr_channels, cfg.hidden, cfg.hidden)
        self.fusion = _FusionUNet(9, cfg.refine_channels, 7 if cfg.gate else 6)
        if cfg.residual:  # the clamped gate starts half open (its zero is exact linear interpolation)
            with torch.no_grad():
                self.fusion.out.bias[6] = 0.5

    # ------------------------------------------------------------------ pieces
    def _normalise(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        if a.ndim == 3:
            a, b = a[:, None], b[:, None]
        if a.ndim != 4 or a.shape[1] != 1 or a.shape != b.shape:
            raise ValueError(f"views must be (B, 1, H, W) (or (B, H, W)) and alike, got {tuple(a.shape)} and {tuple(b.shape)}")
        scale = (0.5 * (a.mean(dim=(1, 2, 3)) + b.mean(dim=(1, 2, 3)))).abs().clamp_min(self.config.min_scale)
        s = scale[:, None, None, None]
        h, w = a.shape[-2:]
        m = self.MULTIPLE
        ph, pw = (-h) % m, (-w) % m
        a, b = a / s, b / s
        if ph or pw:
            a = F.pad(a, (0, pw, 0, ph), mode="replicate")
            b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        return a, b, scale, (h, w)

    def estimate_flows(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows ``F_ab`` (from a to b) and ``F_ba``, (B, 2, H, W) in pixels, for normalised padded views.

        The correlation, context and GRU work at 1/``corr_stride`` of the input; the flows are upsampled bilinearly."""
        cfg = self.config
        bsz = a.shape[0]
        feats = self.encoder(torch.cat([a, b], dim=0))
        f3 = feats[2] if cfg.corr_stride == 8 else feats[1]
        # local contrast of the features (removes the per-channel offset that conv biases give every pixel), then
        # per-pixel standardisation: a correlation of structure, independent of the crop or detector size
        g = _high_pass(self.corr_proj(f3).float(), 7)
        g = g / g.pow(2).mean(dim=1, keepdim=True).add(1e-6).sqrt()
        ga, gb = g[:bsz], g[bsz:]
        _, c, h8, w8 = ga.shape
        corr = torch.einsum("bchw,bcij->bhwij", ga, gb) / math.sqrt(c)
        corr_ab = _CorrPyramid(corr, cfg.corr_levels, cfg.corr_radius)
        corr_ba = _CorrPyramid(corr.permute(0, 3, 4, 1, 2), cfg.corr_levels, cfg.corr_radius)
        h_state, ctx = self.context(f3).split(cfg.hidden, dim=1)  # a's context first, then b's (batch order)
        h_state, ctx = torch.tanh(h_state), torch.relu(ctx)
        base = _pixel_grid(h8, w8, a.device, torch.float32)
        flow = torch.zeros((2 * bsz, 2, h8, w8), device=a.device, dtype=torch.float32)
        for _ in range(cfg.iters):
            coords = base + flow.detach()
            corr_feat = torch.cat([corr_ab.lookup(coords[:bsz]), corr_ba.lookup(coords[bsz:])], dim=0)
            h_state, delta = self.update(h_state, corr_feat.to(h_state.dtype), flow.to(h_state.dtype), ctx)
            flow = flow + delta.float()
        up = float(cfg.corr_stride) * F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=False)
        return up[:bsz], up[bsz:]

    def synthesise(self, a, b, flow_ab, flow_ba, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """The view at fraction ``t`` (B,) from normalised padded views and their flows; see :meth:`forward`."""
        tt = t.to(a.dtype).reshape(-1, 1, 1, 1)
        flow_ta = -(1 - tt) * tt * flow_ab + tt * tt * flow_ba
        flow_tb = (1 - tt) ** 2 * flow_ab - tt * (1 - tt) * flow_ba
        wa0, wb0 = backward_warp(a, flow_ta), backward_warp(b, flow_tb)
        x = torch.cat([a, b, wa0, wb0, flow_ta / 8, flow_tb / 8, tt.expand_as(a)], dim=1)
        out = self.fusion(x)
        flow_ta = flow_ta + tt * out[:, 0:2]
        flow_tb = flow_tb + (1 - tt) * out[:, 2:4]
        mask = 0.02 + 0.96 * torch.sigmoid(out[:, 4:5])
        residual = tt * (1 - tt) * out[:, 5:6]
        wa, wb = backward_warp(a, flow_ta), backward_warp(b, flow_tb)
        ka, kb = (1 - tt) * mask, tt * (1 - mask)
        fused = (ka * wa + kb * wb) / (ka + kb)
        blend = fused
        if self.config.gate:
            gate = out[:, 6:7].clamp(0.0, 1.0) if self.config.residual else torch.sigmoid(out[:, 6:7])
            blend = (1 - gate) * ((1 - tt) * a + tt * b) + gate * fused
        # with residual, "blend" is the flow-based fusion before the gate (what the auxiliary loss trains)
        return {"view": blend + residual, "blend": fused if self.config.residual else blend, "flow_ta": flow_ta,
                "flow_tb": flow_tb, "mask": mask, "residual": residual}

    # ------------------------------------------------------------------ API
    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, t: torch.Tensor | float) -> dict[str, torch.Tensor]:
        """Synthesise the view at fraction ``t`` between ``view_a`` (t = 0) and ``view_b`` (t = 1).

        Args:
            view_a, view_b: (B, 1, H, W) line integrals.
            t: (B,) fractions in [0, 1] (or one number).

        Returns:
            dict with ``"view"`` (B, 1, H, W) in the units of the inputs, ``"blend"`` (the fused warped views
            before the residual, same units), ``"flow_ta"``, ``"flow_tb"`` (B, 2, H, W) in pixels, ``"mask"``
            (B, 1, H, W) the fusion weight of view ``a``, ``"flow_ab"``, ``"flow_ba"``.
        """
        a, b, scale, (h, w) = self._normalise(view_a, view_b)
        t = torch.as_tensor(t, device=a.device, dtype=torch.float32).reshape(-1).expand(a.shape[0])
        flow_ab, flow_ba = self.estimate_flows(a, b)
        out = self.synthesise(a, b, flow_ab, flow_ba, t)
        s = scale[:, None, None, None]
        res = {k: v[..., :h, :w] for k, v in out.items()}
        res["view"] = res["view"] * s
        res["blend"] = res["blend"] * s
        res["flow_ab"], res["flow_ba"] = flow_ab[..., :h, :w], flow_ba[..., :h, :w]
        return res

    @torch.no_grad()
    def complete_pairs(self, view_a: torch.Tensor, view_b: torch.Tensor, pair_of: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Several views per pair: flows once per pair (P pairs), then ``len(t)`` views, view ``i`` between
        pair ``pair_of[i]``. Returns (len(t), 1, H, W) in input units."""
        a, b, scale, (h, w) = self._normalise(view_a, view_b)
        flow_ab, flow_ba = self.estimate_flows(a, b)
        out = self.synthesise(a[pair_of], b[pair_of], flow_ab[pair_of], flow_ba[pair_of], t)["view"]
        return out[..., :h, :w] * scale[pair_of][:, None, None, None]
