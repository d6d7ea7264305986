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


def die_with_parent() -> None:
    """Ask Linux to end this process when the one that started it ends, however that ends (a worker left behind by
    a killed kernel would hold a core and memory for as long as its share of the work takes)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent was already gone before the request was made
            os._exit(1)


KEEP_FREED_BYTES = 1 << 30  # blocks up to 1 GiB come from, and go back to, the process's own heap
DEFAULT_ALLOCATOR = "ECG_DEFAULT_ALLOCATOR"  # set (to anything): glibc's defaults kept, for a benchmark's baseline


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep what this process frees for its next allocations (M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD, M_TOP_PAD) rather than hand each large block back to the system. Per-picture work allocates and
    frees arrays of megabytes; each block handed back is faulted in again, page by page, on the next picture, and a
    virtual machine's page faults are dear: on the 2-core machine the whole pass spent half its time in the kernel
    (`python -m utils.bench.stages`, README). The process keeps its peak memory instead of shrinking after it.
    Called once, when utils is imported (utils/__init__.py); Linux with glibc only, else nothing, and nothing where
    ECG_DEFAULT_ALLOCATOR is set. Returns whether it was applied."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get(DEFAULT_ALLOCATOR):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
        return all([libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES) == 1,
                    libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1,
                    libc.mallopt(M_TOP_PAD, 64 << 20) == 1])
    except (OSError, AttributeError):  # another C library (musl): its own allocator, left as it is
        return False


def init_worker() -> None:
    """One thread per worker process: a worker per core already fills the machine; more threads only contend. The
    worker ends with the process that started it."""
    die_with_parent()
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


class RunStopped(BaseException):
    """The run was told to stop (SIGTERM, SIGHUP): not an error of a step, so no `except Exception` swallows it."""


def end_descendants(grace_s: float = 10.0) -> int:
    """Terminate every process this one started, at any depth (notebook kernels, their pools, torchrun), then kill
    what is still there after `grace_s`; returns how many there were."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


def stop_with_descendants() -> None:
    """On SIGTERM or SIGHUP (a `timeout`, a stopped job, a closed terminal) end every descendant first, then raise
    RunStopped in the main thread, so the run's own clean-up runs and no worker outlives it."""
    import signal

    def handler(signum, frame):
        signal.signal(signum, signal.SIG_IGN)  # a second signal while ending the children changes nothing
        n = end_descendants()
        raise RunStopped(f"stopped by {signal.Signals(signum).name}; {n} child process(es) ended with it")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
