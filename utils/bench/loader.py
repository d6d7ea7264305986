"""The training loader's rate per number of CPU cores: `python -m utils.bench.loader [--cores 1,2,4] [--n 96]`.

Kaggle gives 4 cores to two T4s: does the loader keep up there? The pictures are what the kaggle profile trains on:
synthetic photos at the kaggle page size, prepared by step 02 (roi_clahe, cached at `cache_long_side`), read by the
training dataset with the default augmentation at the kaggle input size. For each core count the process is pinned
to that many cores (workers inherit it) and runs one worker per core, each with one OpenCV thread, as training does;
counts above this machine's cores are reported as not measured. Printed beside what two T4s consume, estimated from
the GPU check's measured step rate (the budget's figure).
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

from utils.core.cli import add_debug, run_cli
from utils.core.config import DEFAULTS
from utils.core.device import PEAKS, forward_flops
from utils.core.keys import split_list
from utils.pipeline.budget import achieved_fraction
from utils.preprocess.cache import prepare
from utils.preprocess.step import prep_settings
from utils.synth.generate import SynthSettings, make_sample
from utils.train.augment import train_transform
from utils.train.dataset import CachedImages, ModelInput
from utils.train.loader import one_opencv_thread
from utils.train.models import build_untrained


def cached_pictures(folder: Path, n: int) -> pd.DataFrame:
    """n synthetic photos of the kaggle profile, prepared and cached as step 02 caches them."""
    synth = SynthSettings.from_config(DEFAULTS, "photo")
    prep = prep_settings({**DEFAULTS, "seg_method": "classical"}, "roi_clahe", "", Path("."))
    rows = []
    for i in range(n):
        data, _, labels = make_sample(synth, i)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        path = folder / f"{i}.jpg"
        cv2.imwrite(str(path), prepare(img, prep)[0], [cv2.IMWRITE_JPEG_QUALITY, prep.jpeg_quality])
        rows.append({"id": str(i), "cached": str(path), "MI": 0, "AF": 0, "HYP": 0, "CD": 0, "STTC": 0})
    return pd.DataFrame(rows)


def rate(df: pd.DataFrame, cores: list[int], batch: int = 16) -> dict:
    """Images/s of the training dataset through a DataLoader with one worker per core, pinned to `cores`."""
    import torch
    from torch.utils.data import DataLoader

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        size = (DEFAULTS["image_height"], DEFAULTS["image_width"])
        ds = CachedImages(df, ModelInput(size, (0.5,) * 3, (0.25,) * 3), train_transform(DEFAULTS["aug_strength"]))
        one_opencv_thread()  # as training does before its workers start
        loader = DataLoader(ds, batch_size=batch, num_workers=len(cores), shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        it = iter(loader)
        first = next(it)  # workers started, first batch out
        started, n = time.perf_counter(), 0
        for b in it:
            n += len(b[0])
        seconds = time.perf_counter() - started
        return {"cores": len(cores), "workers": len(cores), "images": n + len(first[0]),
                "images_per_s": round(n / seconds, 1) if n else None}
    finally:
        os.sched_setaffinity(0, before)


def two_t4_rate() -> tuple[float | None, str]:
    """What two T4s consume at the kaggle profile (images/s), from the budget's measured share of the fp16 peak."""
    size = (DEFAULTS["image_height"], DEFAULTS["image_width"])
    share, basis = achieved_fraction(DEFAULTS["backbone"], f"{size[0]}x{size[1]}")
    fwd = forward_flops(build_untrained(DEFAULTS["backbone"], 5, size), size, "cpu")
    per_gpu = PEAKS["T4"]["fp16"] * 1e12 * share / (3 * fwd)
    return round(2 * per_gpu, 1), f"2 x T4 at {basis}, {3 * fwd / 1e9:.0f} GFLOP per training image (estimate)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.loader", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", default="1,2,4", help="core counts to measure (Kaggle: 4)")
    ap.add_argument("--n", type=int, default=96, help="pictures (the first batch is not timed)")
    return run_cli(_main, add_debug(ap).parse_args(argv))


def _main(a) -> int:
    counts = [int(c) for c in split_list(a.cores)]
    have = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        df = cached_pictures(Path(tmp), a.n)
        print(f"{a.n} kaggle-profile photos prepared (roi_clahe, {DEFAULTS['cache_long_side']} px) in "
              f"{time.perf_counter() - started:.0f} s; input {DEFAULTS['image_height']}x{DEFAULTS['image_width']}, "
              f"augmentation {DEFAULTS['aug_strength']}")
        for c in counts:
            if c > len(have):
                print(f"{c} cores: not measured (this machine lets this process use {len(have)})")
                continue
            r = rate(df, have[:c])
            print(f"{c} cores, {r['workers']} workers: {r['images_per_s']} images/s")
    need, basis = two_t4_rate()
    print(f"two T4s consume about {need} images/s ({basis})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
