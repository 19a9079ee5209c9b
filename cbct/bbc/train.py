"""``cbct train bbc --config FILE``: train the completion network, then the restoration network.

Seeded (every draw comes from ``seed``), resumable (a checkpoint with model, optimiser, step and the random states is
written every ``checkpoint_every`` steps into ``out_dir``; a rerun continues from it), CPU- or GPU-sized by the config
(``configs/bbc_cpu.yaml``, ``configs/bbc_gpu.yaml``), mixed precision on CUDA (bfloat16 autocast where supported,
else float16 with gradient scaling). The final weights go to ``weights.completion`` and ``weights.restoration``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pathlib
import time

import numpy as np
import torch
from scipy import ndimage

from cbct.bbc.data import ScanConfig, TripletSampler, load_sequences, noisy
from cbct.bbc.model import FlowCompletionConfig, FlowCompletionNet
from cbct.bbc.restoration import RestorationConfig, RestorationNet
from cbct.bbc.slices import SliceSampler, fov_mask
from cbct.bbc.training import (
    charbonnier,
    describe_device,
    load_config,
    lr_at,
    make_optimizer,
    resolve_device,
    resolve_path,
    resume_checkpoint,
    write_checkpoint,
)
from cbct.bbc.weights import load_completion, save_weights

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
    from cbct.bbc.model import backward_warp

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


def validation_set(cfg: dict, scan: ScanConfig, cache_dir: pathlib.Path) -> dict[int, tuple[np.ndarray, ...]]:
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


def train_completion(cfg: dict, *, resume: bool = True) -> pathlib.Path:
    """Train the completion network per ``cfg``; returns the path of the final weights."""
    cc = cfg["completion"]
    dev = resolve_device(cfg["device"])
    if dev.type == "cpu":
        torch.set_num_threads(int(cfg["threads"]))
    scan = ScanConfig.from_dict(cfg["scan"])
    cache_dir = resolve_path(cfg["cache_dir"])
    out_dir = resolve_path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
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
    if cc["init"] and not (resume and (out_dir / "completion_ckpt.pt").exists()):
        model.load_state_dict(load_completion(resolve_path(cc["init"])).state_dict())
        log.info("completion starts from %s", cc["init"])
    opt, use_amp, amp_dtype, scaler = make_optimizer(model, cc, dev)
    ckpt = out_dir / "completion_ckpt.pt"
    step, elapsed, history = 0, 0.0, []
    if resume and ckpt.exists():
        step, elapsed, history = resume_checkpoint(ckpt, model, opt, scaler, sampler, dev, "completion")
    total = int(cc["steps"])
    model.train()
    t0 = time.perf_counter() - elapsed
    running = []
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, int(cc["warmup"]), float(cc["lr"]))
        a, b, y, t = (torch.from_numpy(v).to(dev) for v in sampler.sample(int(cc["batch"])))
        with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
            loss, _ = completion_loss(model, a, b, y, t, photometric=float(cc["photometric"]), smoothness=float(cc["smoothness"]))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        running.append(loss.item())
        step += 1
        if step % int(cc["log_every"]) == 0:
            log.info("completion step %d/%d loss %.5f (%.0f s)", step, total, np.mean(running), time.perf_counter() - t0)
            history.append({"step": step, "loss": float(np.mean(running))})
            running = []
        if step % int(cc["checkpoint_every"]) == 0 or step == total:
            metrics = validate(model, val, dev)
            history.append({"step": step, **metrics})
            log.info("completion step %d validation %s", step, {k: round(v, 2) for k, v in metrics.items()})
            write_checkpoint(ckpt, model, opt, scaler, sampler, step, time.perf_counter() - t0, history)
    wall = time.perf_counter() - t0
    metrics = validate(model, val, dev)
    meta = {
        "steps": total, "batch": cc["batch"], "crop": cc["crop"], "train_seconds": round(wall, 1),
        "device": describe_device(dev, int(cfg["threads"])), "amp": use_amp, "seed": seed,
        "scan": cfg["scan"], "data": cfg["data"]["train"], "validation": metrics, "torch": str(torch.__version__),
        "history": history[-40:],
    }
    path = save_weights(resolve_path(cfg["weights"]["completion"]), model, meta=meta)
    log.info("completion weights written to %s (%.0f s training, validation %s)", path, wall, metrics)
    return path


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
    from cbct.bbc.recon import complete_scan
    from cbct.fdk import fdk
    from cbct.simulation.sparse import sparse_indices

    rc = cfg["restoration"]
    scan = ScanConfig.from_dict(cfg["scan"])
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


def train_restoration(cfg: dict, *, resume: bool = True) -> pathlib.Path:
    """Train the restoration network on reconstructions of network-completed scans; returns the weights path."""
    rc = cfg["restoration"]
    dev = resolve_device(cfg["device"])
    if dev.type == "cpu":
        torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    torch.manual_seed(seed + 1)
    scan = ScanConfig.from_dict(cfg["scan"])
    out_dir = resolve_path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    completion_path = resolve_path(cfg["weights"]["completion"])
    t_data = time.perf_counter()
    pairs = restoration_volumes(cfg, completion_path, dev)
    data_seconds = time.perf_counter() - t_data
    log.info("restoration data: %d volume pairs, %.0f s", len(pairs), data_seconds)
    n_val = max(1, len(pairs) // 8)
    train_pairs, val_pairs = pairs[:-n_val], pairs[-n_val:]
    net = RestorationNet(RestorationConfig.from_dict(rc["model"])).to(dev)
    mask = fov_mask(scan.volume_shape[1:], scan.voxel_size, 0.95 * scan.fov_radius())
    sampler = SliceSampler(train_pairs, context=net.config.context, crop=tuple(rc["crop"]), mask=mask,
                           rng=np.random.default_rng([seed, 3]))
    opt, use_amp, amp_dtype, scaler = make_optimizer(net, rc, dev)
    ckpt = out_dir / "restoration_ckpt.pt"
    step, elapsed, history = 0, 0.0, []
    if resume and ckpt.exists():
        step, elapsed, history = resume_checkpoint(ckpt, net, opt, scaler, sampler, dev, "restoration")
    total = int(rc["steps"])
    t0 = time.perf_counter() - elapsed
    running = []
    net.train()

    def val_psnr() -> dict[str, float]:
        from cbct.bbc.restoration import restore_volume

        out = {}
        gains = []
        for x, y in val_pairs:
            r = restore_volume(net, x, device=dev)
            dr = float(y[:, mask].max() - y[:, mask].min())
            mse_in = float(((x - y)[:, mask] ** 2).mean())
            mse_out = float(((r - y)[:, mask] ** 2).mean())
            gains.append(10 * np.log10(mse_in / mse_out))
            out.setdefault("psnr_in", []).append(10 * np.log10(dr**2 / mse_in))
            out.setdefault("psnr_out", []).append(10 * np.log10(dr**2 / mse_out))
        net.train()
        return {"psnr_in": float(np.mean(out["psnr_in"])), "psnr_out": float(np.mean(out["psnr_out"])), "gain_db": float(np.mean(gains))}

    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, int(rc["warmup"]), float(rc["lr"]))
        x, y, m, sc = (torch.from_numpy(v).to(dev) for v in sampler.sample(int(rc["batch"])))
        with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
            loss = restoration_loss(net, x, y, m, sc)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        running.append(loss.item())
        step += 1
        if step % int(rc["log_every"]) == 0:
            log.info("restoration step %d/%d loss %.5f (%.0f s)", step, total, np.mean(running), time.perf_counter() - t0)
            history.append({"step": step, "loss": float(np.mean(running))})
            running = []
        if step % int(rc["checkpoint_every"]) == 0 or step == total:
            write_checkpoint(ckpt, net, opt, scaler, sampler, step, time.perf_counter() - t0, history)
    wall = time.perf_counter() - t0
    metrics = val_psnr()
    log.info("restoration validation %s", metrics)
    meta = {
        "steps": total, "batch": rc["batch"], "crop": rc["crop"], "train_seconds": round(wall, 1),
        "data_seconds": round(data_seconds, 1), "device": describe_device(dev, int(cfg["threads"])), "amp": use_amp,
        "seed": seed, "factors": rc["factors"], "volume_pairs": len(pairs), "validation": metrics,
        "completion_weights_sha1": _file_hash(completion_path), "torch": str(torch.__version__), "history": history[-40:],
    }
    path = save_weights(resolve_path(cfg["weights"]["restoration"]), net, meta=meta)
    log.info("restoration weights written to %s (%.0f s training)", path, wall)
    return path


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cbct train bbc", description="Train BBC-Recon (completion, then restoration).")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/bbc_cpu.yaml")
    p.add_argument("--stage", choices=("completion", "restoration", "all"), default="all")
    p.add_argument("--no-resume", action="store_true", help="start afresh even when a checkpoint exists")
    p.add_argument("--device", help="override the config's device (cpu, cuda, cuda:1, auto)")
    p.add_argument("--steps", type=int, help="override the number of steps of the stage(s) trained")
    p.add_argument("--out-dir", help="override the config's out_dir (checkpoints)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cbct train bbc``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(args.config)
    if args.device:
        cfg["device"] = args.device
    if args.out_dir:
        cfg["out_dir"] = args.out_dir
    if args.steps is not None:
        if args.steps < 1:
            raise SystemExit("--steps must be positive")
        cfg["completion"]["steps"] = cfg["restoration"]["steps"] = args.steps
    if args.stage in ("completion", "all"):
        train_completion(cfg, resume=not args.no_resume)
    if args.stage in ("restoration", "all"):
        train_restoration(cfg, resume=not args.no_resume)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
