"""Random training batches of SBP-MAC: crops of axial slices (with their neighbours) of cached scans."""

from __future__ import annotations

import numpy as np
import torch

from cbct.sbp_mac.cache import SplitArrays
from cbct.sbp_mac.data import SampleSpec, InGridScanConfig, displacement_field, segment_motion
from cbct.sbp_mac.inference import input_scale
from cbct.sbp_mac.model import SBPMACConfig
from cbct.sbp_mac.truncated import TruncatedScanConfig

__all__ = ["SliceBatcher"]


class SliceBatcher:
    """Random training batches from a split in memory.

    Each item: a random scan, a random axial slice ``z`` (neighbours beyond the volume repeat the edge slice) and a
    random ``crop`` × ``crop`` window, all of its volumes optionally multiplied by one random factor in
    ``[1 - intensity_jitter, 1 + intensity_jitter]`` (reconstruction is linear in the attenuation, so a scaled
    object gives scaled FDK images, segments and references). Values are put in the network's units by each scan's
    :func:`~cbct.sbp_mac.inference.input_scale` (fixed, or the scan's own level when the model normalises). :meth:`batch` returns scaled torch tensors ``image`` (B, C, h, w),
    ``segments`` (B, K, C, h, w) or ``None``, ``target`` (B, 1, h, w) and, with ``with_flow``, the true in-plane
    displacement fields (B, K, 2, h, w) in pixels (from the samples' motion, recomputed from their specs).
    """

    def __init__(
        self,
        split: SplitArrays,
        cfg: SBPMACConfig,
        crop: int | None,
        *,
        scan: InGridScanConfig | TruncatedScanConfig | None = None,
        with_flow: bool = False,
        intensity_jitter: float = 0.0,
    ) -> None:
        self.split, self.config = split, cfg
        if not 0.0 <= intensity_jitter < 1.0:
            raise ValueError(f"train.intensity_jitter must lie in [0, 1), got {intensity_jitter}")
        self.jitter = float(intensity_jitter)
        ny, nx = split.fdk.shape[2:]
        self.crop = None if crop is None else int(crop)
        if self.crop is not None and (self.crop > min(ny, nx) or self.crop % cfg.multiple):
            raise ValueError(f"train.crop must be a multiple of {cfg.multiple} no larger than {min(ny, nx)}, got {crop}")
        if split.segments.shape[1] != cfg.n_segments:
            raise ValueError(f"the data has K = {split.segments.shape[1]} segments, the model expects {cfg.n_segments}")
        self.scales = np.array([input_scale(cfg, split.fdk[i].astype(np.float32)) for i in range(len(split))])
        self.motions = None
        if with_flow:
            if not isinstance(scan, InGridScanConfig):
                raise ValueError("with_flow needs the scan config of objects inside the grid (data.kind: inside)")
            self.scan = scan
            self.motions = [segment_motion(SampleSpec(m["source"], m["seed"], m["waveform"], tuple(m["mixed_kinds"])), scan) for m in split.meta]

    def batch(self, rng: np.random.Generator, batch_size: int, device: torch.device) -> dict[str, torch.Tensor | None]:
        cfg, s = self.config, self.split
        n, nz, ny, nx = s.fdk.shape
        h = w = self.crop
        if h is None:
            h, w = ny - ny % cfg.multiple, nx - nx % cfg.multiple
        scans = rng.integers(0, n, batch_size)
        zs = rng.integers(0, nz, batch_size)
        y0 = rng.integers(0, ny - h + 1, batch_size)
        x0 = rng.integers(0, nx - w + 1, batch_size)
        gains = rng.uniform(1 - self.jitter, 1 + self.jitter, batch_size) if self.jitter > 0 else np.ones(batch_size)
        gains = gains * self.scales[scans]
        offsets = np.arange(-cfg.n_neighbours, cfg.n_neighbours + 1)
        images, segs, targets, flows = [], [], [], []
        for i, z, y, x, g in zip(scans, zs, y0, x0, gains):
            zz = np.clip(z + offsets, 0, nz - 1)
            win = (slice(y, y + h), slice(x, x + w))
            images.append(s.fdk[i][zz][:, win[0], win[1]] * g)
            targets.append(s.reference[i, z][None, win[0], win[1]] * g)
            if cfg.use_segments:
                segs.append(s.segments[i][:, zz][:, :, win[0], win[1]] * g)
            if self.motions is not None:
                flows.append(displacement_field(*self.motions[i], self.scan.grid, int(z), win[0], win[1]))
        k = cfg.n_segments

        def tensor(items: list[np.ndarray], scale: float) -> torch.Tensor:
            return torch.from_numpy(np.stack(items).astype(np.float32) * scale).to(device)

        return {
            "image": tensor(images, 1.0),
            "segments": tensor(segs, float(k)) if cfg.use_segments else None,
            "target": tensor(targets, 1.0),
            "flow": tensor(flows, 1.0) if flows else None,
        }
