"""Datasets over the cache: fixed training size, deterministic augmentation, labels with their known-mask."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .metrics import LABELS


def attach_cache(manifest: pd.DataFrame, cache_table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest rows with their cached image; rows whose preparation failed are returned apart (listed)."""
    cached = cache_table[cache_table["ok"].astype(bool)][["id", "cached"]]
    merged = manifest.merge(cached, on="id", how="left")
    missing = merged[merged["cached"].isna()]
    return merged[merged["cached"].notna()].reset_index(drop=True), missing


class CachedImages(Dataset):
    """(image tensor, labels with NaN as 0, known-mask, index); augmentation seeded by (seed, epoch, index)."""

    def __init__(self, df: pd.DataFrame, size: tuple[int, int], mean, std, transform=None, seed: int = 0):
        self.paths = df["cached"].tolist()
        y = df[list(LABELS)].astype(float).to_numpy() if set(LABELS) <= set(df.columns) \
            else np.full((len(df), len(LABELS)), np.nan)
        self.mask = (~np.isnan(y)).astype(np.float32)
        self.y = np.nan_to_num(y).astype(np.float32)
        self.size, self.transform, self.seed, self.epoch = size, transform, seed, 0
        self.mean = np.array(mean, np.float32) * 255
        self.std = np.array(std, np.float32) * 255

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        img = cv2.imread(self.paths[i], cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cached image {self.paths[i]} cannot be read; rebuild the cache (step 02)")
        h, w = self.size
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.transform is not None:
            self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]))
            img = self.transform(image=img)["image"]
        x = (img.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), torch.from_numpy(self.y[i]), \
            torch.from_numpy(self.mask[i]), i
