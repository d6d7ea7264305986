"""Figures the notebooks show and save: prevalence bars, sample grids."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .sources import LABELS


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not matplotlib.is_interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_prevalence(summary: pd.DataFrame, path: Path) -> Path:
    """Label prevalence (over known labels) per source and split; missing bars are unknown labels."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    names = [f"{r.source}\n{r.split} (n={r.images})" for r in summary.itertuples()]
    width = 0.8 / len(LABELS)
    x = np.arange(len(summary))
    for j, k in enumerate(LABELS):
        ax.bar(x + j * width - 0.4 + width / 2, summary[k].fillna(0), width, label=k)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("prevalence among known labels")
    ax.legend(ncol=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def thumbnail(path: str, width: int = 320) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return np.full((int(width * 0.75), width, 3), 255, np.uint8)
    small = cv2.resize(img, (width, max(1, int(img.shape[0] * width / img.shape[1]))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def sample_grid_by_source(manifest: pd.DataFrame, path: Path, per_source: int = 4, seed: int = 0) -> Path:
    """A few images of each source with their known labels."""
    plt = _plt()
    sources = list(dict.fromkeys(manifest["source"]))
    fig, axes = plt.subplots(len(sources), per_source, figsize=(3.2 * per_source, 2.9 * len(sources)), squeeze=False)
    for r, source in enumerate(sources):
        part = manifest[manifest["source"] == source]
        pick = part.sample(min(per_source, len(part)), random_state=seed)
        for c in range(per_source):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(pick):
                continue
            row = pick.iloc[c]
            ax.imshow(thumbnail(row["image"]))
            labels = [k for k in LABELS if row[k] == 1] or ["normal" if row[list(LABELS)].notna().all() else "?"]
            ax.set_title(f"{source}: {', '.join(labels)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
