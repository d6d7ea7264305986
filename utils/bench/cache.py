"""Cache throughput, side by side on the same pictures: `python -m utils.bench.cache [--n 48] [--max-side 3460]`.

Builds competition-sized synthetic photos, times the cache build, then a torch DataLoader reading (a) the cached
images and (b) the original photos, decoding, finding and cropping the sheet and applying CLAHE on the fly.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from utils.core.packs import read_picture
from utils.preprocess.cache import PrepSettings, build_cache, prepare
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings


class _Pictures:
    """Minimal map-style dataset: path -> float tensor at a fixed training size."""

    def __init__(self, paths, on_the_fly: bool, size=(384, 512)):
        self.paths, self.on_the_fly, self.size = list(paths), on_the_fly, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        img = cv2.imread(self.paths[i], cv2.IMREAD_COLOR) if self.on_the_fly else read_picture(self.paths[i])
        if self.on_the_fly:
            img, _ = prepare(img, PrepSettings(strategy="roi_clahe", long_side=max(self.size)))
        img = cv2.resize(img, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255)


def _loader_rate(paths, on_the_fly: bool, workers: int, epochs: int = 2) -> float:
    from torch.utils.data import DataLoader

    dl = DataLoader(_Pictures(paths, on_the_fly), batch_size=8, num_workers=workers,
                    persistent_workers=workers > 0)
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in dl:
            n += len(batch)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.cache", description=__doc__)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--max-side", type=int, default=3460, help="photo size (competition: about 1900x3460)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s = SynthSettings(style="photo", page_width=2200, page_height=1700, photo_max_side=args.max_side)
        generate_dataset(tmp / "photos", s, n_train=args.n, workers=args.workers, progress=False)
        photos = sorted(str(p) for p in (tmp / "photos" / "train").glob("*.jpg"))
        items = pd.DataFrame({"id": [Path(p).stem for p in photos], "image": photos})
        t = time.perf_counter()
        table = build_cache(items, PrepSettings(strategy="roi_clahe", long_side=512), tmp / "cache",
                            workers=args.workers, progress=False)
        build = len(items) / (time.perf_counter() - t)
        size = cv2.imread(photos[0]).shape
        print(f"cache build (roi_clahe, classical finder, {size[1]}x{size[0]} photos -> 512 px, "
              f"{args.workers} processes): {build:.1f} images/s")
        cached = _loader_rate(table["cached"], False, args.workers)
        fly = _loader_rate(photos, True, args.workers)
        print(f"DataLoader, {args.workers} workers, batches of 8 at 384x512: cached {cached:.1f} images/s, "
              f"on the fly {fly:.1f} images/s -> {cached / fly:.1f}x (same run, same pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
