"""One training engine for Stage I and Stage II: `fit()` (and `python -m utils.train.engine` for torchrun on 2 GPUs).

Masked BCE with pos_weight, AdamW, warm-up + cosine cycles, early stopping on validation macro-AUROC,
mixed precision (fp16 with a scaler on T4, bf16 where supported), channels-last, gradient accumulation,
DistributedDataParallel under torchrun, a checkpoint every epoch written atomically, and resume after a kill.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from utils.core.progress import tqdm

from utils.core.device import device_precision, resolve_device
from utils.core.session import PAUSED, SessionPaused, paused, time_is_up
from utils.core.atomic import atomic_write_bytes, atomic_write_text
from utils.core.labels import LABELS
from utils.core.metrics import auroc_table
from utils.train.augment import train_transform
from utils.train.dataset import CachedImages, ModelInput
from utils.train.loader import make_loader
from utils.train.speed import compile_wanted, optimizer, peak_memory_gib
from utils.train.settings import TrainSettings, resolve_threads, same_fit, seed_everything
from utils.train.models import SCRATCH, create_model, data_config, freeze_early, no_weights_message
from utils.train.objective import EarlyStopping, cosine_lambda, masked_bce, pos_weight


def _dist() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def probabilities(models, x: torch.Tensor, device: torch.device, amp_dtype=None) -> np.ndarray:
    """The forward pass of all inference: each model's sigmoid probabilities for a batch, (models, n, labels), in the
    training's mixed precision. Validation here and every prediction of the packaged ensemble go through it."""
    x = x.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return np.stack([torch.sigmoid(m(x).float()).cpu().numpy() for m in models])


def predict(model, loader, device, amp_dtype=None, desc="predict") -> np.ndarray:
    """Sigmoid probabilities in dataset order, for a loader of cached (already prepared) pictures."""
    model.eval()
    out = np.zeros((len(loader.dataset), len(LABELS)), np.float32)
    for x, _, _, idx in tqdm(loader, desc=desc, leave=False, unit="batch"):
        out[idx.numpy()] = probabilities([model], x, device, amp_dtype)[0]
    return out


def build(s: TrainSettings, device: torch.device):
    model, source = create_model(s.backbone, len(LABELS), s.backbone_weights, s.hub, s.drop_rate,
                                 (s.image_height, s.image_width))
    if s.init_checkpoint:
        state = torch.load(s.init_checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        source = f"checkpoint:{s.init_checkpoint}"
    elif source == "scratch" and s.backbone_weights != SCRATCH:
        # hours of GPU quota on random weights are never spent by accident
        raise ValueError(no_weights_message(s.backbone).replace("training from scratch", "refusing to train from "
                                                                "scratch unasked"))
    model = model.to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, source


PAUSED_EXIT = 75  # a process that paused at the session limit (EX_TEMPFAIL)
# Rank 0 validates and writes checkpoints while the other ranks wait in the next collective: NCCL's default
# 10 minutes can pass on a large Stage I validation plus a 1 GB checkpoint write.
DDP_TIMEOUT = timedelta(hours=2)


@dataclass
class Loop:
    """Everything one fit() works with: the model (and its DDP wrapper), data, optimiser, schedule and state."""
    s: TrainSettings
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module
    net: torch.nn.Module
    source: str
    frozen: list
    data_config: dict
    train_ds: CachedImages
    val_ds: CachedImages
    weight: torch.Tensor
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    per_epoch: int
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    stopper: EarlyStopping
    history: list
    start: int = 0
    eager_net: torch.nn.Module | None = None  # the uncompiled net while a compiled one has not finished a step


def grad_sync(net: torch.nn.Module, world: int, update: bool):
    """Under DDP, gradients are all-reduced only on the micro-step that updates the weights (accumulation steps
    before it run under no_sync)."""
    return net.no_sync() if world > 1 and not update else contextlib.nullcontext()


def _setup_device(s: TrainSettings) -> tuple[int, int, int, torch.device]:
    """Rank, world size, local rank and this process's device (one GPU per process under torchrun)."""
    rank, world, local = _dist()
    gpus = torch.cuda.device_count() if s.device != "cpu" else 0
    if world > 1 and gpus:
        local = local % gpus  # more processes than GPUs (a wiring check on one GPU) share them
        torch.cuda.set_device(local)  # before any CUDA call: otherwise every rank opens a context on GPU 0
    if world > 1 and not torch.distributed.is_initialized():
        # NCCL needs a GPU of its own per process; gloo carries the rest (CPU, or several processes on one GPU)
        backend = "nccl" if gpus >= world else "gloo"
        torch.distributed.init_process_group(backend, timeout=DDP_TIMEOUT)
    device = resolve_device(f"cuda:{local}" if world > 1 and gpus else s.device)
    return rank, world, local, device


def _datasets(s: TrainSettings, model, train_df, val_df) -> tuple[dict, CachedImages, CachedImages]:
    dc = data_config(model)
    model_input = ModelInput((s.image_height, s.image_width), dc["mean"], dc["std"], s.input_channels)
    train_ds = CachedImages(train_df, model_input, train_transform(s.aug_strength), s.seed)
    return dc, train_ds, CachedImages(val_df, model_input)


def create_loop(s: TrainSettings, train_df: pd.DataFrame, val_df: pd.DataFrame) -> Loop:
    """Model, data, optimiser, schedule and precision for a fresh fit."""
    rank, world, local, device = _setup_device(s)
    seed_everything(s.seed)
    threads = resolve_threads(s, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = s.cudnn_benchmark  # one training size: the fastest kernels, found once
    model, source = build(s, device)
    if s.frozen_stages and source == "scratch":
        raise ValueError(f"frozen_stages={s.frozen_stages} would freeze random weights: {s.backbone} has no "
                         f"pretrained weights here (set backbone_weights, or frozen_stages=0)")
    frozen = freeze_early(model, s.frozen_stages)
    dc, train_ds, val_ds = _datasets(s, model, train_df, val_df)
    weight = torch.tensor(pos_weight(train_ds.y * train_ds.mask, train_ds.mask), dtype=torch.float32, device=device)
    opt = optimizer(model, s.lr, s.weight_decay, device)
    if rank == 0 and device.type == "cpu":
        print(f"training on CPU with {threads} torch thread(s); weights: {source}"
              + (f"; stem and {s.frozen_stages} stage(s) frozen" if frozen else ""))
    train_loader = make_loader(train_ds, s, True, world, rank)
    per_epoch = len(train_loader)
    if s.max_steps_per_epoch:
        per_epoch = min(per_epoch, s.max_steps_per_epoch)
    updates = max(1, per_epoch // s.accum_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(updates * s.epochs, int(updates * s.warmup_epochs),
                                                                 s.num_cycles))
    precision = device_precision(device, s.amp)
    amp_dtype = precision.dtype
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    net = torch.nn.parallel.DistributedDataParallel(model, [local] if device.type == "cuda" else None) \
        if world > 1 else model
    eager = None
    if compile_wanted(s.compile, device):
        eager, net = net, torch.compile(net)
    return Loop(s, rank, world, device, model, net, source, frozen, dc, train_ds, val_ds, weight, opt, sched, scaler,
                amp_dtype, per_epoch, train_loader, make_loader(val_ds, s, False), EarlyStopping(s.patience), [],
                eager_net=eager)


def _compile_failed(loop: Loop, exc: Exception) -> None:
    """The compiled net failed on its first step: one warning, and the fit goes on with the eager one."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    warnings.warn(f"torch.compile failed on the first training step ({type(exc).__name__}: {first}); training "
                  f"without it (set torch_compile=off to skip the attempt)", RuntimeWarning, stacklevel=2)
    loop.net, loop.eager_net = loop.eager_net, None
    loop.opt.zero_grad(set_to_none=True)


def resume(loop: Loop, last: Path) -> None:
    """Continue from last.pt when it exists (same settings only)."""
    if not last.is_file():
        return
    ck = torch.load(last, map_location="cpu", weights_only=False)
    if not same_fit(ck["settings"], asdict(loop.s)):
        raise ValueError(f"{last} was written with other settings; use another folder or delete it")
    loop.model.load_state_dict(ck["model"])
    loop.opt.load_state_dict(ck["optimizer"])
    loop.sched.load_state_dict(ck["scheduler"])
    loop.scaler.load_state_dict(ck["scaler"])
    loop.stopper = EarlyStopping(loop.s.patience, ck["best"], ck["bad"])
    loop.history, loop.start = ck["history"], ck["epoch"] + 1
    torch.set_rng_state(ck["torch_rng"])
    if loop.rank == 0:
        print(f"resuming from {last}: epoch {loop.start + 1} of {loop.s.epochs}")


def train_epoch(loop: Loop, epoch: int) -> tuple[float, int, float]:
    """One pass over the training data: (mean loss, images seen, seconds)."""
    s = loop.s
    loop.train_loader.sampler.set_epoch(epoch)
    loop.net.train()
    for m in loop.frozen:
        m.eval()
    if loop.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loop.device)
    t0, seen, total = time.time(), 0, torch.zeros((), device=loop.device)
    bar = tqdm(loop.train_loader, total=loop.per_epoch, desc=f"epoch {epoch + 1}/{s.epochs}",
               disable=loop.rank != 0, unit="batch")
    loop.opt.zero_grad(set_to_none=True)
    for step, (x, y, m, _) in enumerate(bar):
        if step >= loop.per_epoch:
            break
        x = x.to(loop.device, non_blocking=True)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y, m = y.to(loop.device, non_blocking=True), m.to(loop.device, non_blocking=True)
        update = (step + 1) % s.accum_steps == 0 or step + 1 == loop.per_epoch
        try:
            loss = backward(loop, x, y, m, update)
        except Exception as exc:  # noqa: BLE001 - only a compiled net's first step falls back; the rest raise
            if loop.eager_net is None:
                raise
            _compile_failed(loop, exc)
            loss = backward(loop, x, y, m, update)
        loop.eager_net = None  # the compiled net has run a step: its errors from now on are the fit's
        if update:
            loop.scaler.step(loop.opt)
            loop.scaler.update()
            loop.opt.zero_grad(set_to_none=True)
            loop.sched.step()
        seen += len(x)
        total += loss * s.accum_steps * len(x)
        if step % POSTFIX_EVERY == 0:  # reading the loss waits for the GPU: not at every step
            bar.set_postfix(loss=f"{total.item() / seen:.4f}", lr=f"{loop.sched.get_last_lr()[0]:.2e}")
    return total.item() / max(seen, 1), seen, time.time() - t0


POSTFIX_EVERY = 20  # steps between the progress bar's loss readings


def backward(loop: Loop, x, y, m, update: bool) -> torch.Tensor:
    """Forward and backward of one micro-batch; its loss as a tensor on the device (no wait for the GPU)."""
    with grad_sync(loop.net, loop.world, update):
        with torch.autocast(loop.device.type, dtype=loop.amp_dtype, enabled=loop.amp_dtype is not None):
            loss = masked_bce(loop.net(x), y, m, loop.weight) / loop.s.accum_steps
        loop.scaler.scale(loss).backward()
    return loss.detach()


def validate(loop: Loop) -> tuple[np.ndarray, float, float, dict]:
    """Validation probabilities, loss, macro-AUROC and per-label AUROC (rank 0)."""
    probs = predict(loop.model, loop.val_loader, loop.device, loop.amp_dtype, "validate")
    with torch.no_grad():
        vloss = masked_bce(torch.logit(torch.tensor(probs).clamp(1e-6, 1 - 1e-6)), torch.tensor(loop.val_ds.y),
                           torch.tensor(loop.val_ds.mask), loop.weight.cpu()).item()
    macro, per = auroc_table(loop.val_ds.y, probs, loop.val_ds.mask.astype(bool))
    return probs, vloss, macro, per


def save_epoch(loop: Loop, epoch: int, out_dir: Path, probs: np.ndarray, val_ids, improved: bool) -> None:
    """best.pt and its validation predictions when the metric improved; last.pt and history.csv every epoch."""
    s = loop.s
    if improved:
        _save({"model": loop.model.state_dict(), "settings": asdict(s), "data_config": loop.data_config,
               "epoch": epoch + 1, "macro_auroc": loop.history[-1]["macro_auroc"], "weights_source": loop.source},
              out_dir / "best.pt")
        pd.DataFrame(probs, columns=list(LABELS)).assign(id=val_ids).to_csv(out_dir / "val_predictions.csv",
                                                                             index=False)
    _save({"model": loop.model.state_dict(), "optimizer": loop.opt.state_dict(), "scheduler": loop.sched.state_dict(),
           "scaler": loop.scaler.state_dict(), "epoch": epoch, "best": loop.stopper.best, "bad": loop.stopper.bad,
           "history": loop.history, "settings": asdict(s), "torch_rng": torch.get_rng_state()}, out_dir / "last.pt")
    atomic_write_text(out_dir / "history.csv", pd.DataFrame(loop.history).to_csv(index=False))


def _agree_to_stop(loop: Loop, stop: bool) -> bool:
    """Rank 0 decides; under DDP every rank follows."""
    if loop.world > 1:
        flag = torch.tensor([int(stop)], device=loop.device)
        torch.distributed.broadcast(flag, 0)
        stop = bool(flag.item())
    return stop


def fit(s: TrainSettings, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: Path,
        limit: float | None = None) -> dict:
    """Train with early stopping; writes best.pt, history.csv, val_predictions.csv and result.json in out_dir, and
    last.pt (to resume) until the fit finishes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = completed(s, out_dir)
    if done is not None:
        return done
    loop = create_loop(s, train_df, val_df)
    resume(loop, out_dir / "last.pt")
    stop = bool(loop.history) and loop.stopper.bad >= s.patience
    for epoch in range(loop.start, s.epochs if not stop else loop.start):
        _pause_before(loop, epoch, limit, out_dir)
        train_loss, seen, train_time = train_epoch(loop, epoch)
        if loop.rank == 0:
            t0 = time.time()
            probs, vloss, macro, per = validate(loop)
            # a validation set without both classes of any label (tiny runs) falls back to its loss, every epoch
            improved, stop = loop.stopper.step(macro if not math.isnan(macro) else -vloss)
            loop.history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 5), "val_loss": round(vloss, 5),
                                 "lr": loop.sched.get_last_lr()[0], **{f"auroc_{k}": per[k] for k in LABELS},
                                 "macro_auroc": macro, "seconds": round(train_time + time.time() - t0, 1),
                                 "train_images_per_s": round(seen / max(train_time, 1e-9), 2),
                                 "peak_memory_gib": peak_memory_gib(loop.device)})
            save_epoch(loop, epoch, out_dir, probs, val_df["id"].to_numpy(), improved)
            print(f"epoch {epoch + 1}: loss {loop.history[-1]['train_loss']:.4f}, val macro-AUROC {macro:.4f}"
                  f"{' (best)' if improved else ''}, {loop.history[-1]['train_images_per_s']} images/s")
        if _agree_to_stop(loop, stop):
            if loop.rank == 0:
                print(f"early stopping: no improvement for {s.patience} epochs")
            break
    result = {"best_macro_auroc": loop.stopper.best, "epochs_run": len(loop.history), "weights_source": loop.source,
              "out_dir": str(out_dir)}
    if loop.rank == 0:
        atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2))
        # the optimiser state is only for resuming: a finished fit keeps best.pt (about a third of last.pt's size)
        (out_dir / "last.pt").unlink(missing_ok=True)
        (out_dir / "paused.txt").unlink(missing_ok=True)
    return result


def _pause_before(loop: Loop, epoch: int, limit: float | None, out_dir: Path) -> None:
    """Stop at this epoch boundary when the next epoch would end after the session's limit (rank 0 decides: every
    rank stops together). last.pt already holds the finished epochs."""
    if limit is None:
        return
    last = loop.history[-1]["seconds"] * 1.1 if loop.history else 0.0
    stop = int(loop.rank == 0 and time_is_up(limit, last))
    if loop.world > 1:
        flag = torch.tensor([stop], device=loop.device)
        torch.distributed.broadcast(flag, 0)
        stop = int(flag.item())
    if stop:
        if loop.rank == 0:
            atomic_write_text(out_dir / "paused.txt", f"{PAUSED}\n")
        raise paused(f"epoch {epoch + 1} of {out_dir}", last)


def completed(s: TrainSettings, out_dir: Path) -> dict | None:
    """The result of a fit that finished in out_dir with these settings (None when there is none)."""
    result, best = Path(out_dir) / "result.json", Path(out_dir) / "best.pt"
    if not (result.is_file() and best.is_file()):
        return None
    if not same_fit(torch.load(best, map_location="cpu", weights_only=True)["settings"], asdict(s)):
        raise ValueError(f"{out_dir} holds a finished fit with other settings; use another folder or delete it")
    print(f"{out_dir}: finished earlier, kept (delete result.json to train again)")
    return json.loads(result.read_text())


def main(argv=None) -> int:
    """torchrun entry: python -m utils.train.engine --settings s.json --train t.csv --val v.csv --out DIR"""
    ap = argparse.ArgumentParser(prog="python -m utils.train.engine")
    for name in ("--settings", "--train", "--val", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--limit", type=float, default=None, help="session limit (epoch seconds): pause before it")
    a = ap.parse_args(argv)
    s = TrainSettings(**json.loads(Path(a.settings).read_text()))
    code = 0
    try:
        fit(s, pd.read_csv(a.train, dtype={"id": str}), pd.read_csv(a.val, dtype={"id": str}), Path(a.out), a.limit)
    except SessionPaused as stopped:  # the launcher reads paused.txt
        print(stopped)
        code = PAUSED_EXIT
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
