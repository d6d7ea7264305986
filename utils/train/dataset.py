"""The one picture -> tensor transform (training and serving alike) and the dataset over the cache: fixed training
size, deterministic augmentation, labels with their known-mask."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from utils.core.labels import LABELS
from utils.core.packs import read_picture

INPUT_CHANNELS = ("rgb", "gray", "max")


def model_rgb(img_bgr: np.ndarray, size: tuple[int, int], channels: str = "rgb") -> np.ndarray:
    """A prepared BGR picture as the model's RGB input at (h, w): its colours, its luminance, or its brightest
    channel, in which red, green or blue grid lines fade to paper white while dark ink stays dark."""
    h, w = size
    img = cv2.resize(img_bgr, (w, h), interpolation=cv2.INTER_AREA)
    if channels == "rgb":
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels not in INPUT_CHANNELS:
        raise ValueError(f"input_channels must be one of {INPUT_CHANNELS}, got {channels!r}")
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if channels == "gray" else img.max(axis=2)
    return cv2.merge([g, g, g])


class ModelInput:
    """A prepared BGR picture as the model's input: resized to (h, w), colours per `channels`, normalised, CHW.

    Training (CachedImages) and serving (the packaged Predictor) both go through this one object; augmentation, when
    training, acts on the uint8 RGB picture between `rgb` and `tensor`."""

    def __init__(self, size: tuple[int, int], mean, std, channels: str = "rgb"):
        if channels not in INPUT_CHANNELS:
            raise ValueError(f"input_channels must be one of {INPUT_CHANNELS}, got {channels!r}")
        self.size, self.channels = (int(size[0]), int(size[1])), channels
        self.mean = np.array(mean, np.float32) * 255
        self.std = np.array(std, np.float32) * 255

    def rgb(self, img_bgr: np.ndarray) -> np.ndarray:
        return model_rgb(img_bgr, self.size, self.channels)

    def tensor(self, rgb: np.ndarray) -> torch.Tensor:
        x = (rgb.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy())

    def __call__(self, img_bgr: np.ndarray) -> torch.Tensor:
        return self.tensor(self.rgb(img_bgr))


def attach_cache(manifest: pd.DataFrame, cache_table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest rows with their cached image; rows whose preparation failed are returned apart (listed)."""
    cached = cache_table[cache_table["ok"].astype(bool)][["id", "cached"]]
    merged = manifest.merge(cached, on="id", how="left")
    missing = merged[merged["cached"].isna()]
    return merged[merged["cached"].notna()].reset_index(drop=True), missing


class EpochKeys(Sampler):
    """The indices of `make(epoch)` (a sampler per epoch) as keys `epoch * n + index`: CachedImages reads the epoch
    from the key, so loader workers that persist from one epoch to the next draw each epoch's augmentation without
    being told (an attribute set on the dataset in this process never reaches their copies)."""

    def __init__(self, make, n: int):
        self.make, self.n, self.epoch = make, n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return (self.epoch * self.n + int(i) for i in self.make(self.epoch))

    def __len__(self) -> int:
        return len(self.make(self.epoch))


class CachedImages(Dataset):
    """(image tensor, labels with NaN as 0, known-mask, index); augmentation seeded by (seed, epoch, index), the
    epoch read from the key (EpochKeys) or 0 for a plain index."""

    def __init__(self, df: pd.DataFrame, model_input: ModelInput, transform=None, seed: int = 0):
        self.paths = df["cached"].tolist()
        y = df[list(LABELS)].astype(float).to_numpy() if set(LABELS) <= set(df.columns) \
            else np.full((len(df), len(LABELS)), np.nan)
        self.mask = (~np.isnan(y)).astype(np.float32)
        self.y = np.nan_to_num(y).astype(np.float32)
        self.input, self.transform, self.seed = model_input, transform, seed

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        try:
            img = read_picture(self.paths[i])
        except OSError:
            img = None
        if img is None:
            raise ValueError(f"cached image {self.paths[i]} cannot be read; rebuild the cache (step 02)")
        return self.input.rgb(img)

    def __getitem__(self, key: int):
        epoch, i = divmod(int(key), len(self))
        img = self.load(i)
        if self.transform is not None:
            self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))
            img = self.transform(image=img)["image"]
        return self.input.tensor(img), torch.from_numpy(self.y[i]), torch.from_numpy(self.mask[i]), i
