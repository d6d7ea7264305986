"""Training throughput: `python -m utils.bench.train [--backbone convnext_atto] [--size 256x352] [--batch 16]`.

Prints images/s of the data loader alone (cached JPEGs, augmentation on) and of a full training step (forward,
masked BCE, backward, AdamW), measured in the same run, for each torch thread count and frozen-stage setting asked
for (`--threads 1,2 --frozen-stages 0,2`); on a GPU also with mixed precision.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from utils.core.device import device_precision
from utils.core.keys import split_list
from utils.train.augment import train_transform
from utils.train.dataset import CachedImages, ModelInput
from utils.train.settings import free_cores
from utils.train.models import create_model, data_config, freeze_early
from utils.train.objective import masked_bce


def synthetic_cache(folder: Path, n: int, h: int, w: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = np.full((h * 2, w * 2, 3), 235, np.uint8)
        cv2.putText(img, str(i), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 0, 0), 3)
        img[rng.integers(0, h * 2, 200), rng.integers(0, w * 2, 200)] = 0
        p = folder / f"{i}.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows.append({"id": str(i), "cached": str(p), "MI": i % 2, "AF": 0, "HYP": 1, "CD": 0, "STTC": i % 3 == 0})
    return pd.DataFrame(rows)


def step_rate(model, opt, x, y, m, steps: int = 6, dtype=None) -> float:
    """Images/s of a full training step (forward, masked BCE, backward, AdamW), the median of `steps` after 2."""
    device = x.device
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    times = []
    for _ in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = masked_bce(model(x), y, m)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return len(x) / float(np.median(times[2:]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="convnext_atto")
    ap.add_argument("--size", default="256x352", help="HxW")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="CPU: torch thread counts to compare, comma-separated")
    ap.add_argument("--frozen-stages", default="0", help="stem + early stages frozen, comma-separated to compare")
    a = ap.parse_args(argv)
    h, w = (int(v) for v in a.size.split("x"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from torch.utils.data import DataLoader

    with tempfile.TemporaryDirectory() as tmp:
        df = synthetic_cache(Path(tmp), a.batch * (a.steps + 2), h, w)
        model, _ = create_model(a.backbone, 5, hub=False)
        dc = data_config(model)
        ds = CachedImages(df, ModelInput((h, w), dc["mean"], dc["std"]), train_transform(), seed=0)
        dl = DataLoader(ds, batch_size=a.batch, num_workers=a.workers, shuffle=True, drop_last=True)
        t = time.perf_counter()
        n = sum(len(b[0]) for b in dl)
        loader_rate = n / (time.perf_counter() - t)
        x = torch.randn(a.batch, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (a.batch, 5), device=device).float()
        m = torch.ones_like(y)
        amp = device_precision(device)
        modes = [("fp32", None)] + ([(amp.name, amp.dtype)] if amp.enabled else [])
        print(f"{a.backbone} at {h}x{w}, batch {a.batch}, device {device}")
        print(f"data loader alone ({a.workers} workers, augmentation on): {loader_rate:.1f} images/s")
        threads = [int(t) for t in split_list(a.threads)] if device.type == "cpu" else [torch.get_num_threads()]
        print(f"free cores now: {free_cores()} of {os.cpu_count()}")
        for frozen in (int(f) for f in split_list(a.frozen_stages)):
            model, _ = create_model(a.backbone, 5, hub=False)
            freeze_early(model, frozen)
            model = model.to(device).to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            for n in threads:
                torch.set_num_threads(n)
                for name, dtype in modes:
                    rate = step_rate(model, opt, x, y, m, a.steps, dtype)
                    print(f"training step ({name}, {n} thread(s), stem + {frozen} stage(s) frozen): "
                          f"{rate:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
