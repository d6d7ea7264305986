"""The fit's data loaders: made once per fit, workers that persist and prefetch, one OpenCV thread each, as many as
the cores a training process may use."""
from __future__ import annotations

import torch

from utils.core.pool import usable_cores
from utils.train.dataset import EpochKeys
from utils.train.settings import TrainSettings


def make_loader(ds, s: TrainSettings, shuffle: bool, world: int = 1, rank: int = 0):
    """The fit's loader, made once: its workers persist from epoch to epoch (prefetching PREFETCH batches each) and
    the epoch travels in the sampler's keys (EpochKeys; set_epoch before each pass). The same orders as a sampler
    made afresh each epoch: DistributedSampler under DDP, else a permutation seeded by (seed, epoch)."""
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

    def order(epoch: int):
        if world > 1:
            sampler = DistributedSampler(ds, world, rank, shuffle=shuffle, seed=s.seed)
            sampler.set_epoch(epoch)
            return sampler
        if shuffle:
            return RandomSampler(ds, generator=torch.Generator().manual_seed(s.seed * 1000 + epoch))
        return SequentialSampler(ds)

    workers = loader_workers(s.num_workers, world)
    if workers:
        one_opencv_thread()
    return DataLoader(ds, batch_size=s.batch_size, sampler=EpochKeys(order, len(ds)), num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=shuffle and len(ds) > s.batch_size,
                      persistent_workers=workers > 0, prefetch_factor=PREFETCH if workers else None)


PREFETCH = 4  # batches each loader worker prepares ahead


def one_opencv_thread() -> None:
    """Loader workers decode and augment with one OpenCV thread each (a worker per core already fills the cores).
    Set in this process before the workers are forked, which inherit it: resizing OpenCV's thread pool inside a
    forked worker, after this process has used it, hangs the worker (measured: utils.bench.loader stopped there)."""
    import cv2

    cv2.setNumThreads(1)


def loader_workers(wanted: int, world: int = 1) -> int:
    """Loader workers of one training process: the cores this process may use shared by the `world` processes
    (two T4s on Kaggle's 4 cores: 2 each, not 4 each fighting over 4), at most `wanted`."""
    return max(0, min(wanted, usable_cores() // max(world, 1)))
