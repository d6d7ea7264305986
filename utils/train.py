"""One training engine for Stage I and Stage II: `fit()` (and `python -m utils.train` for torchrun on 2 GPUs).

Masked BCE with pos_weight, AdamW, warm-up + cosine cycles, early stopping on validation macro-AUROC,
mixed precision (fp16 with a scaler on T4, bf16 where supported), channels-last, gradient accumulation,
DistributedDataParallel under torchrun, a checkpoint every epoch written atomically, and resume after a kill.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .augment import train_transform
from .data import CachedImages
from .io import atomic_write_bytes, atomic_write_text
from .metrics import LABELS, EarlyStopping, auroc_table, cosine_lambda, masked_bce, pos_weight
from .models import create_model, data_config, freeze_early


@dataclass
class TrainSettings:
    backbone: str = "convnext_base.fb_in22k"
    backbone_weights: str = ""     # local file or folder; empty: hub if allowed, else scratch
    hub: bool = False
    init_checkpoint: str = ""      # Stage I best.pt to start Stage II from
    image_height: int = 512
    image_width: int = 704
    epochs: int = 30
    batch_size: int = 32
    accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    num_cycles: float = 0.5
    patience: int = 5
    drop_rate: float = 0.2
    aug_strength: float = 1.0
    num_workers: int = 2
    seed: int = 42
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    max_steps_per_epoch: int = 0   # 0: whole epoch (a cap for quick CPU runs)
    frozen_stages: int = 0         # stem + this many early stages keep their pretrained weights
    threads: int = 0               # CPU threads for torch; 0: the cores free when training starts
    input_channels: str = "rgb"    # rgb, gray or max (brightest channel: coloured grid lines fade)


def free_cores(interval: float = 0.5) -> int:
    """Cores not busy with other work right now (measured over `interval` s), at least one.

    On a CPU, torch threads that outnumber the free cores spin against the other work: a step ran 5-10x slower.
    """
    import psutil

    busy = psutil.cpu_percent(interval=interval) / 100.0
    n = os.cpu_count() or 1
    return max(1, min(n, int(round(n * (1.0 - busy) + 0.25))))


def resolve_threads(s: "TrainSettings", device: torch.device) -> int:
    """Set torch's CPU threads for this run (GPU runs keep torch's default) and return the count."""
    if device.type != "cpu":
        return torch.get_num_threads()
    n = s.threads or free_cores()
    torch.set_num_threads(n)
    return n


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _dist() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _amp_dtype(device: torch.device, amp: bool):
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def predict(model, loader, device, amp_dtype=None, desc="predict") -> np.ndarray:
    """Sigmoid probabilities in dataset order."""
    model.eval()
    out = np.zeros((len(loader.dataset), len(LABELS)), np.float32)
    for x, _, _, idx in tqdm(loader, desc=desc, leave=False, unit="batch"):
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out[idx.numpy()] = torch.sigmoid(model(x).float()).cpu().numpy()
    return out


def _loader(ds, s: TrainSettings, shuffle: bool, epoch: int = 0, world: int = 1, rank: int = 0):
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

    if world > 1:
        sampler = DistributedSampler(ds, world, rank, shuffle=shuffle, seed=s.seed)
        sampler.set_epoch(epoch)
    elif shuffle:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(s.seed * 1000 + epoch))
    else:
        sampler = SequentialSampler(ds)
    return DataLoader(ds, batch_size=s.batch_size, sampler=sampler, num_workers=s.num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=shuffle and len(ds) > s.batch_size,
                      persistent_workers=False)


def build(s: TrainSettings, device: torch.device):
    model, source = create_model(s.backbone, len(LABELS), s.backbone_weights, s.hub, s.drop_rate,
                                 (s.image_height, s.image_width))
    if s.init_checkpoint:
        state = torch.load(s.init_checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        source = f"checkpoint:{s.init_checkpoint}"
    model = model.to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, source


def fit(s: TrainSettings, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: Path) -> dict:
    """Train with early stopping; writes last.pt, best.pt, history.csv, val_predictions.csv in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world, local = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = resolve_device(f"cuda:{local}" if world > 1 and torch.cuda.is_available() else s.device)
    seed_everything(s.seed)
    threads = resolve_threads(s, device)
    model, source = build(s, device)
    if s.frozen_stages and source == "scratch":
        raise ValueError(f"frozen_stages={s.frozen_stages} would freeze random weights: {s.backbone} has no "
                         f"pretrained weights here (set backbone_weights, or frozen_stages=0)")
    frozen = freeze_early(model, s.frozen_stages)
    dc = data_config(model)
    size = (s.image_height, s.image_width)
    train_ds = CachedImages(train_df, size, dc["mean"], dc["std"], train_transform(s.aug_strength), s.seed,
                            s.input_channels)
    val_ds = CachedImages(val_df, size, dc["mean"], dc["std"], channels=s.input_channels)
    weight = torch.tensor(pos_weight(train_ds.y * train_ds.mask, train_ds.mask), dtype=torch.float32, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr, weight_decay=s.weight_decay)
    if rank == 0 and device.type == "cpu":
        print(f"training on CPU with {threads} torch thread(s); weights: {source}"
              + (f"; stem and {s.frozen_stages} stage(s) frozen" if frozen else ""))
    per_epoch = len(_loader(train_ds, s, True, world=world, rank=rank))
    if s.max_steps_per_epoch:
        per_epoch = min(per_epoch, s.max_steps_per_epoch)
    updates = max(1, per_epoch // s.accum_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(updates * s.epochs, int(updates * s.warmup_epochs),
                                                                 s.num_cycles))
    amp_dtype = _amp_dtype(device, s.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    net = torch.nn.parallel.DistributedDataParallel(model, [local] if device.type == "cuda" else None) \
        if world > 1 else model
    stopper, history, start = EarlyStopping(s.patience), [], 0
    last = out_dir / "last.pt"
    if last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["settings"] != asdict(s):
            raise ValueError(f"{last} was written with other settings; use another folder or delete it")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        stopper = EarlyStopping(s.patience, ck["best"], ck["bad"])
        history, start = ck["history"], ck["epoch"] + 1
        torch.set_rng_state(ck["torch_rng"])
        if rank == 0:
            print(f"resuming from {last}: epoch {start + 1} of {s.epochs}")
    stop = bool(history) and stopper.bad >= s.patience
    for epoch in range(start, s.epochs if not stop else start):
        train_ds.epoch = epoch
        loader = _loader(train_ds, s, True, epoch, world, rank)
        net.train()
        for m in frozen:
            m.eval()
        t0, seen, total = time.time(), 0, 0.0
        bar = tqdm(loader, total=per_epoch, desc=f"epoch {epoch + 1}/{s.epochs}", disable=rank != 0, unit="batch")
        opt.zero_grad(set_to_none=True)
        for step, (x, y, m, _) in enumerate(bar):
            if step >= per_epoch:
                break
            x = x.to(device, non_blocking=True)
            if s.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y, m = y.to(device), m.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = masked_bce(net(x), y, m, weight) / s.accum_steps
            scaler.scale(loss).backward()
            if (step + 1) % s.accum_steps == 0 or step + 1 == per_epoch:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
            seen += len(x)
            total += loss.item() * s.accum_steps * len(x)
            bar.set_postfix(loss=f"{total / seen:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        train_time = time.time() - t0
        if rank == 0:
            probs = predict(model, _loader(val_ds, s, False), device, amp_dtype, "validate")
            with torch.no_grad():
                vloss = masked_bce(torch.logit(torch.tensor(probs).clamp(1e-6, 1 - 1e-6)), torch.tensor(val_ds.y),
                                   torch.tensor(val_ds.mask), weight.cpu()).item()
            macro, per = auroc_table(val_ds.y, probs, val_ds.mask.astype(bool))
            # a validation set without both classes of any label (tiny runs) falls back to its loss, every epoch
            improved, stop = stopper.step(macro if not math.isnan(macro) else -vloss)
            history.append({"epoch": epoch + 1, "train_loss": round(total / max(seen, 1), 5), "val_loss": round(vloss, 5),
                            "lr": sched.get_last_lr()[0], **{f"auroc_{k}": per[k] for k in LABELS},
                            "macro_auroc": macro, "seconds": round(time.time() - t0, 1),
                            "train_images_per_s": round(seen / max(train_time, 1e-9), 2)})
            if improved:
                _save({"model": model.state_dict(), "settings": asdict(s), "data_config": dc, "epoch": epoch + 1,
                       "macro_auroc": macro, "weights_source": source}, out_dir / "best.pt")
                pd.DataFrame(probs, columns=list(LABELS)).assign(id=val_df["id"].to_numpy()).to_csv(
                    out_dir / "val_predictions.csv", index=False)
            _save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                   "scaler": scaler.state_dict(), "epoch": epoch, "best": stopper.best, "bad": stopper.bad,
                   "history": history, "settings": asdict(s), "torch_rng": torch.get_rng_state()}, last)
            atomic_write_text(out_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
            print(f"epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f}, val macro-AUROC {macro:.4f}"
                  f"{' (best)' if improved else ''}, {history[-1]['train_images_per_s']} images/s")
        if world > 1:
            flag = torch.tensor([int(stop)], device=device)
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            if rank == 0:
                print(f"early stopping: no improvement for {s.patience} epochs")
            break
    result = {"best_macro_auroc": stopper.best, "epochs_run": len(history), "weights_source": source,
              "out_dir": str(out_dir)}
    if rank == 0:
        atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    """torchrun entry: python -m utils.train --settings s.json --train t.csv --val v.csv --out DIR"""
    ap = argparse.ArgumentParser(prog="python -m utils.train")
    for name in ("--settings", "--train", "--val", "--out"):
        ap.add_argument(name, required=True)
    a = ap.parse_args(argv)
    s = TrainSettings(**json.loads(Path(a.settings).read_text()))
    fit(s, pd.read_csv(a.train, dtype={"id": str}), pd.read_csv(a.val, dtype={"id": str}), Path(a.out))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
