"""``cbct train bbc --config FILE``: train the completion network, then the restoration network.

Both go through the one training loop (:mod:`cbct.learned.loop`: seeded, resumable, mixed precision on CUDA,
scheduled, validated) and the shared command line (:mod:`cbct.learned.cli`). Checkpoints, ``log.jsonl`` and the
final weights (``completion.pt``, ``restoration.pt``) go to ``out_dir``; ``--ship`` also writes them over the
package's shipped weights. Configs: ``configs/bbc_cpu.yaml``, ``configs/bbc_gpu.yaml``.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import time
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from cbct.bbc.data import DenseScanConfig, TripletSampler, load_sequences, noisy
from cbct.bbc.model import FlowCompletionConfig, FlowCompletionNet, backward_warp
from cbct.bbc.recon import complete_scan
from cbct.bbc.restoration import RestorationConfig, RestorationNet, restore_volume
from cbct.bbc.slices import SliceSampler
from cbct.bbc.training import charbonnier, load_config, resolve_path
from cbct.bbc.weights import DEFAULT_COMPLETION, DEFAULT_RESTORATION, load_completion
from cbct.fdk import fdk
from cbct.learned.cli import config_overrides, run_command, ship_weights, train_parser
from cbct.learned.device import describe_device, resolve_device
from cbct.learned.loop import LoopSettings, TrainingRun, run_training
from cbct.learned.weights import save_weights
from cbct.metrics import fov_disc
from cbct.simulation.sparse import sparse_indices

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------- completion
def _pair_scale(a: torch.Tensor, b: torch.Tensor, min_scale: float) -> torch.Tensor:
    return (0.5 * (a.mean(dim=(1, 2, 3)) + b.mean(dim=(1, 2, 3)))).abs().clamp_min(min_scale)[:, None, None, None]


def completion_loss(
    model: FlowCompletionNet, a, b, y, t, *, photometric: float = 0.0, smoothness: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training loss in pair-normalised units.

    Charbonnier loss of the synthesised view, plus half of it for the fused warped views (before the residual);
    with ``photometric > 0`` also the self-supervised flow loss ``|warp(b, F_ab) - a| + |warp(a, F_ba) - b|``
    (a direct signal for the flow iterations, which the synthesis loss reaches only through the fusion), and
    ``smoothness`` times the mean absolute flow gradient.
    """
    out = model(a, b, t)
    s = _pair_scale(a, b, model.config.min_scale)
    loss = charbonnier((out["view"].float() - y) / s) + 0.5 * charbonnier((out["blend"].float() - y) / s)
    if photometric > 0:
        fab, fba = out["flow_ab"].float(), out["flow_ba"].float()
        an, bn = a / s, b / s
        loss = loss + photometric * (charbonnier(backward_warp(bn, fab) - an) + charbonnier(backward_warp(an, fba) - bn))
        if smoothness > 0:
            f = torch.cat([fab, fba], dim=0)
            grad = (f[..., 1:, :] - f[..., :-1, :]).abs().mean() + (f[..., :, 1:] - f[..., :, :-1]).abs().mean()
            loss = loss + smoothness * grad
    return loss, out


def validation_set(cfg: dict, scan: DenseScanConfig, cache_dir: pathlib.Path) -> dict[int, tuple[np.ndarray, ...]]:
    """Fixed full-detector triplets from the validation sequences at gaps 4 and 8 (seeded)."""
    seqs = load_sequences(scan, cfg["data"]["val"], cache_dir=cache_dir)
    out = {}
    for gap in (4, 8):
        sampler = TripletSampler(seqs, crop=scan.detector_shape, gap_range=(gap, gap),
                                 i0_range=(cfg["noise"]["eval_i0"],) * 2, rng=np.random.default_rng([cfg["seed"], 99, gap]))
        out[gap] = sampler.sample(24)
    return out


@torch.no_grad()
def validate(model: FlowCompletionNet, val: dict[int, tuple[np.ndarray, ...]], dev: torch.device) -> dict[str, float]:
    """PSNR (dB, range: the largest target value) of the network and of linear interpolation on the validation set."""
    model.eval()
    res = {}
    for gap, (a, b, y, t) in val.items():
        rng = float(y.max())
        mse_net, mse_lin = [], []
        for i in range(0, len(t), 8):
            sl = slice(i, i + 8)
            at, bt, tt = (torch.from_numpy(v[sl]).to(dev) for v in (a, b, t))
            pred = model(at, bt, tt)["view"].float().cpu().numpy()
            lin = (1 - t[sl, None, None, None]) * a[sl] + t[sl, None, None, None] * b[sl]
            mse_net.append(((pred - y[sl]) ** 2).mean(axis=(1, 2, 3)))
            mse_lin.append(((lin - y[sl]) ** 2).mean(axis=(1, 2, 3)))
        res[f"psnr_net_gap{gap}"] = float(10 * np.log10(rng**2 / np.concatenate(mse_net).mean()))
        res[f"psnr_linear_gap{gap}"] = float(10 * np.log10(rng**2 / np.concatenate(mse_lin).mean()))
    model.train()
    return res


def _provenance(cfg: dict, section: dict, run: TrainingRun, dev: torch.device) -> dict[str, Any]:
    """The ``meta`` of a trained network's weights file."""
    return {"steps": run.steps, "batch": section["batch"], "crop": section["crop"], "train_seconds": round(run.seconds, 1),
            "device": describe_device(dev), "seed": int(cfg["seed"]), "validation": run.validation,
            "torch": str(torch.__version__), "history": run.history[-40:], "config": cfg}


def train_completion(cfg: dict, *, resume: bool = True, stop_after: int | None = None) -> tuple[pathlib.Path | None, TrainingRun]:
    """Train the completion network per ``cfg``; returns the final weights (``out_dir/completion.pt``; ``None``
    when ``stop_after`` stopped the run early) and what the run did."""
    cc = cfg["completion"]
    dev = resolve_device(cfg["device"], threads=cfg["threads"])
    scan = DenseScanConfig.from_dict(cfg["scan"])
    cache_dir = resolve_path(cfg["cache_dir"])
    out_dir = resolve_path(cfg["out_dir"])
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    t_data = time.perf_counter()
    seqs = load_sequences(scan, cfg["data"]["train"], cache_dir=cache_dir)
    val = validation_set(cfg, scan, cache_dir)
    log.info("completion data: %d sequences of %s, %.1f s", len(seqs), seqs[0].shape, time.perf_counter() - t_data)
    sampler = TripletSampler(seqs, crop=tuple(cc["crop"]), gap_range=tuple(cc["gap_range"]),
                             i0_range=tuple(cfg["noise"]["i0_range"]), scale_range=tuple(cfg["noise"]["scale_range"]),
                             rng=np.random.default_rng([seed, 1]))
    model = FlowCompletionNet(FlowCompletionConfig.from_dict(cc["model"])).to(dev)
    ckpt = out_dir / "completion_ckpt.pt"
    if cc["init"] and not (resume and ckpt.exists()):
        model.load_state_dict(load_completion(resolve_path(cc["init"])).state_dict())
        log.info("completion starts from %s", cc["init"])
    settings = LoopSettings.from_section(cc)

    def loss_fn(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        a, b, y, t = (torch.from_numpy(v).to(dev) for v in sampler.sample(settings.batch))
        loss, _ = completion_loss(model, a, b, y, t, photometric=float(cc["photometric"]), smoothness=float(cc["smoothness"]))
        return loss, {}

    run = run_training(model, loss_fn, settings=settings, rng=sampler.rng, device=dev, checkpoint=ckpt, identity=cfg,
                       validate=lambda: validate(model, val, dev), name="completion", resume=resume, stop_after=stop_after)
    if not run.finished:
        return None, run
    meta = {**_provenance(cfg, cc, run, dev), "scan": cfg["scan"], "data": cfg["data"]["train"]}
    path = save_weights(out_dir / "completion.pt", model, meta=meta)
    log.info("completion weights written to %s (%.0f s training, validation %s)", path, run.seconds, run.validation)
    return path, run


# ---------------------------------------------------------------------------------------------------- restoration
def _file_hash(path: pathlib.Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:10]


def restoration_volumes(cfg: dict, completion_path: pathlib.Path, dev: torch.device) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, target) volume pairs: FDK of the network-completed noisy sparse scans, FDK of the clean full scans.

    Cached by scan, completion weights and sources. ``restoration.sequences`` training sequences, evenly spread over
    the training list (every source represented; sources with another detector are skipped), are used, each times
    an attenuation calibration drawn log-uniformly in ``noise.scale_range``, at every factor of
    ``restoration.factors`` with a seeded first kept view and noise; with ``restoration.blur_sigma_max > 0`` each clean sequence is first blurred
    on the detector by a Gaussian of random width up to that many pixels (smoother anatomy than the phantoms).
    """
    rc = cfg["restoration"]
    scan = DenseScanConfig.from_dict(cfg["scan"])
    geom = scan.geometry()
    cache_dir = resolve_path(cfg["cache_dir"])
    # the volumes share the config's detector and grid (a source may only enlarge the grid its phantom is made on)
    sources = [src for src in cfg["data"]["train"] if set(src.get("scan", {})) <= {"volume_shape"}]
    all_seqs = load_sequences(scan, sources, cache_dir=cache_dir)
    # evenly spread over the training list, so every source (phantoms and anatomy) is represented
    pick = np.unique(np.round(np.linspace(0, len(all_seqs) - 1, min(int(rc["sequences"]), len(all_seqs)))).astype(int))
    seqs = [all_seqs[i] for i in pick]
    key = hashlib.sha1(repr((scan.key(), _file_hash(completion_path), rc["factors"], pick.tolist(), rc["blur_sigma_max"],
                             cfg["seed"], cfg["data"]["train"], cfg["noise"])).encode()).hexdigest()[:10]
    path = cache_dir / f"restore_{key}.npz"
    if path.exists():
        z = np.load(path)
        return [(z[f"x{i}"].astype(np.float32), z[f"y{i}"].astype(np.float32)) for i in range(int(z["n"]))]
    model = load_completion(completion_path, device=dev)
    g = np.random.default_rng([int(cfg["seed"]), 2])
    pairs = []
    lo, hi = cfg["noise"]["i0_range"]
    blur_max = float(rc["blur_sigma_max"])
    for j, seq in enumerate(seqs):
        if blur_max > 0:  # anatomy smoother than the phantoms' sharp edges (a blurred volume projects to blurred views)
            sigma = float(g.uniform(0.0, blur_max))
            seq = ndimage.gaussian_filter(seq, (0.0, sigma, sigma)).astype(np.float32) if sigma > 0.05 else seq
        seq = seq * np.float32(np.exp(g.uniform(*np.log(cfg["noise"]["scale_range"]))))  # attenuation calibration
        target = np.asarray(fdk(seq, geom), np.float32)
        for f in rc["factors"]:
            i0 = float(np.exp(g.uniform(np.log(lo), np.log(hi))))
            full = noisy(seq, i0, g)
            kept = sparse_indices(geom.n_views, step=int(f), start=int(g.integers(int(f))))
            dense, dense_geom = complete_scan(model, full[kept], geom[kept], target=geom, device=dev)
            pairs.append((np.asarray(fdk(dense, dense_geom), np.float32), target))
        log.info("restoration data: sequence %d/%d", j + 1, len(seqs))
    arrays = {"n": np.array(len(pairs))}
    for i, (x, y) in enumerate(pairs):
        arrays[f"x{i}"], arrays[f"y{i}"] = x.astype(np.float16), y.astype(np.float16)
    np.savez(path, **arrays)
    return pairs


def restoration_loss(net: RestorationNet, x, y, m, scale) -> torch.Tensor:
    """Charbonnier loss inside the field of view, in units of the network's scale (``config.scale`` or each input
    volume's ``scale`` (B,))."""
    s = net.config.scale if net.config.normalise == "fixed" else scale.reshape(-1, 1, 1, 1)
    out = net(x, None if net.config.normalise == "fixed" else scale).float()
    d = (out - y) / s
    return (torch.sqrt(d * d + 1e-6) * m).sum() / m.sum().clamp_min(1.0)


def completion_weights_for_restoration(cfg: dict) -> pathlib.Path:
    """The completion network that makes the restoration's inputs: ``restoration.completion_weights``, else the one
    this run trained (``out_dir/completion.pt``)."""
    given = cfg["restoration"]["completion_weights"]
    path = resolve_path(given) if given else resolve_path(cfg["out_dir"]) / "completion.pt"
    if not path.is_file():
        raise FileNotFoundError(f"restoration training needs completion weights: {path} does not exist (train the "
                                "completion first, or set restoration.completion_weights)")
    return path


def _restoration_validation(net: RestorationNet, pairs: list[tuple[np.ndarray, np.ndarray]], mask: np.ndarray,
                            dev: torch.device) -> dict[str, float]:
    """Mean PSNR (dB, range of the target in the field of view) of the input and restored validation volumes."""
    psnr_in, psnr_out = [], []
    for x, y in pairs:
        r = restore_volume(net, x, device=dev)
        dr = float(y[:, mask].max() - y[:, mask].min())
        psnr_in.append(10 * np.log10(dr**2 / float(((x - y)[:, mask] ** 2).mean())))
        psnr_out.append(10 * np.log10(dr**2 / float(((r - y)[:, mask] ** 2).mean())))
    return {"psnr_in": float(np.mean(psnr_in)), "psnr_out": float(np.mean(psnr_out)),
            "gain_db": float(np.mean(psnr_out) - np.mean(psnr_in))}


def train_restoration(cfg: dict, *, resume: bool = True, stop_after: int | None = None) -> tuple[pathlib.Path | None, TrainingRun]:
    """Train the restoration network on reconstructions of network-completed scans; returns the final weights
    (``out_dir/restoration.pt``; ``None`` when ``stop_after`` stopped the run early) and what the run did."""
    rc = cfg["restoration"]
    dev = resolve_device(cfg["device"], threads=cfg["threads"])
    seed = int(cfg["seed"])
    torch.manual_seed(seed + 1)
    scan = DenseScanConfig.from_dict(cfg["scan"])
    out_dir = resolve_path(cfg["out_dir"])
    completion_path = completion_weights_for_restoration(cfg)
    t_data = time.perf_counter()
    pairs = restoration_volumes(cfg, completion_path, dev)
    data_seconds = time.perf_counter() - t_data
    log.info("restoration data: %d volume pairs, %.0f s", len(pairs), data_seconds)
    if len(pairs) < 2:
        raise ValueError(f"restoration training needs at least 2 volume pairs (1 is kept for validation), got "
                         f"{len(pairs)}: raise restoration.sequences or add restoration.factors")
    n_val = max(1, len(pairs) // 8)
    train_pairs, val_pairs = pairs[:-n_val], pairs[-n_val:]
    net = RestorationNet(RestorationConfig.from_dict(rc["model"])).to(dev)
    mask = fov_disc(scan.volume_shape[1:], 0.95 * scan.fov_radius(), scan.voxel_size)
    sampler = SliceSampler(train_pairs, context=net.config.context, crop=tuple(rc["crop"]), mask=mask,
                           rng=np.random.default_rng([seed, 3]))
    settings = LoopSettings.from_section(rc)

    def loss_fn(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, m, sc = (torch.from_numpy(v).to(dev) for v in sampler.sample(settings.batch))
        return restoration_loss(net, x, y, m, sc), {}

    run = run_training(net, loss_fn, settings=settings, rng=sampler.rng, device=dev,
                       checkpoint=out_dir / "restoration_ckpt.pt", identity=cfg, name="restoration", resume=resume,
                       validate=lambda: _restoration_validation(net, val_pairs, mask, dev), stop_after=stop_after)
    if not run.finished:
        return None, run
    meta = {**_provenance(cfg, rc, run, dev), "data_seconds": round(data_seconds, 1), "factors": rc["factors"],
            "volume_pairs": len(pairs), "completion_weights_sha1": _file_hash(completion_path)}
    path = save_weights(out_dir / "restoration.pt", net, meta=meta)
    log.info("restoration weights written to %s (%.0f s training)", path, run.seconds)
    return path, run


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cbct train bbc``; returns the exit status."""
    p = train_parser("cbct train bbc", "Train BBC-Recon: the completion network, then the restoration network.")
    p.add_argument("--stage", choices=("completion", "restoration", "all"), default="all", help="which network(s)")
    args = p.parse_args(argv)

    def body() -> int:
        cfg = load_config(args.config, config_overrides(args))
        resume = not args.no_resume
        for name, train, shipped in (("completion", train_completion, DEFAULT_COMPLETION),
                                     ("restoration", train_restoration, DEFAULT_RESTORATION)):
            if args.stage not in (name, "all"):
                continue
            path, run = train(cfg, resume=resume, stop_after=args.stop_after)
            if path is None:
                return 0  # stopped early: a rerun resumes
            if args.ship:
                ship_weights(path, shipped)
        return 0

    return run_command(body)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
