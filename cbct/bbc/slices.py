"""Axial-slice training samples for the restoration network: the field-of-view disc and random 2.5D crops."""

from __future__ import annotations

import numpy as np

from cbct.bbc.restoration import slice_stack, volume_scale

__all__ = ["SliceSampler"]


class SliceSampler:
    """Random 2.5D crops (input stacks, target centre slices, FOV masks, input volume scales) from volume pairs,
    with flips and 90° turns."""

    def __init__(self, pairs, *, context: int, crop: tuple[int, int], mask: np.ndarray, rng: np.random.Generator) -> None:
        self.pairs, self.context, self.crop, self.mask, self.rng = pairs, context, crop, mask, rng
        self.scales = [volume_scale(x) for x, _ in pairs]

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, mask, scale)``: (batch, context, h, w), (batch, 1, h, w) ×2 float32 and (batch,) float32 (the
        :func:`~cbct.bbc.restoration.volume_scale` of each crop's input volume)."""
        g = self.rng
        h, w = self.crop
        xs = np.empty((batch, self.context, h, w), np.float32)
        ys = np.empty((batch, 1, h, w), np.float32)
        ms = np.empty((batch, 1, h, w), np.float32)
        ss = np.empty(batch, np.float32)
        for n in range(batch):
            j = int(g.integers(len(self.pairs)))
            x, y = self.pairs[j]
            ss[n] = self.scales[j]
            nz, ny, nx = x.shape
            k = int(g.integers(nz))
            y0, x0 = int(g.integers(ny - h + 1)), int(g.integers(nx - w + 1))
            win = (slice(y0, y0 + h), slice(x0, x0 + w))
            xi = slice_stack(x, np.array([k]), self.context)[0][(slice(None), *win)]
            yi = y[k][win][None]
            mi = self.mask[win][None].astype(np.float32)
            turns = int(g.integers(4))
            flip = g.random() < 0.5
            xi, yi, mi = (np.rot90(v, turns, axes=(1, 2)) for v in (xi, yi, mi))
            if flip:
                xi, yi, mi = (v[:, :, ::-1] for v in (xi, yi, mi))
            xs[n], ys[n], ms[n] = xi, yi, mi
        return xs, ys, ms, ss
