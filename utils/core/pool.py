"""The one process pool for per-picture work (synthesis, the preprocessing cache): spawned workers with one
OpenCV/torch thread each, results in order with a progress bar, small jobs done in this process.

Resuming is the caller's: it passes only the items not yet done, and each result is written as it arrives, so a
killed run loses at most the pictures in flight.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from utils.core.progress import tqdm

T = TypeVar("T")
R = TypeVar("R")


def init_worker() -> None:
    """One thread per worker process: a worker per core already fills the machine; more threads only contend."""
    import cv2

    cv2.setNumThreads(1)
    import sys

    if "torch" in sys.modules:  # spawned workers import torch only when their function needs it
        sys.modules["torch"].set_num_threads(1)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a pinned process, a container's share), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """0 means one per usable CPU core."""
    return workers or usable_cores()


def pool_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 0, desc: str = "", unit: str = "img",
             progress: bool = True, serial_below: int = 4) -> Iterator[R]:
    """fn over items, in order. fn must be a module-level function (spawned workers import it)."""
    items = list(items)
    workers = resolve_workers(workers)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)
    try:
        if workers == 1 or len(items) < serial_below:
            for item in items:
                yield fn(item)
                bar.update()
            return
        chunk = max(1, min(16, len(items) // (workers * 8)))
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()
