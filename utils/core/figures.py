"""Figures the notebooks show and save: prevalence bars, sample grids, training curves, ROC and reliability."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from utils.core import packs
from utils.core.labels import LABELS
from utils.core.metrics import label_aurocs


def pyplot():
    """matplotlib's pyplot, on the file backend unless a notebook already chose an interactive one."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not matplotlib.is_interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_prevalence(summary: pd.DataFrame, path: Path) -> Path:
    """Label prevalence (over known labels) per source and split; missing bars are unknown labels."""
    plt = pyplot()
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
    """A picture (a file, or a packed cache reference) at `width`, white where it cannot be read."""
    try:
        img = packs.read_picture(str(path))
    except OSError:
        img = None
    if img is None:
        return np.full((int(width * 0.75), width, 3), 255, np.uint8)
    small = cv2.resize(img, (width, max(1, int(img.shape[0] * width / img.shape[1]))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def sample_grid_by_source(manifest: pd.DataFrame, path: Path, per_source: int = 4, seed: int = 0) -> Path:
    """A few images of each source with their known labels."""
    plt = pyplot()
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


def before_after_grid(table: pd.DataFrame, path: Path, n: int = 4, seed: int = 0, title: str = "") -> Path:
    """Original pictures beside their cached versions, with the method and any fallback."""
    plt = pyplot()
    ok = table[table["ok"].astype(bool)]
    pick = ok.sample(min(n, len(ok)), random_state=seed) if len(ok) else ok
    fig, axes = plt.subplots(max(1, len(pick)), 2, figsize=(8, 3.2 * max(1, len(pick))), squeeze=False)
    for r, row in enumerate(pick.itertuples()):
        axes[r][0].imshow(thumbnail(row.source_image))
        axes[r][1].imshow(thumbnail(row.cached))
        fb = getattr(row, "fallback", "") or ""
        axes[r][0].set_title(f"{row.id[-30:]}", fontsize=8)
        axes[r][1].set_title(f"{title} {row.method} {('fallback: ' + fb) if isinstance(fb, str) and fb else ''}",
                             fontsize=8)
        axes[r][0].axis("off")
        axes[r][1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def image_strip(images: list[str], titles: list[str], path: Path, cols: int = 4) -> Path:
    """A grid of pictures with titles (worst detections, fallbacks, failures)."""
    plt = pyplot()
    n = max(1, len(images))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t in zip(axes.ravel(), images, titles):
        ax.imshow(thumbnail(img))
        ax.set_title(t, fontsize=7)
    if not images:
        axes[0][0].set_title("nothing to show", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def training_curves(histories: dict[str, pd.DataFrame], path: Path) -> Path:
    """Loss and validation macro-AUROC per epoch, one line per run (Stage I, or each fold)."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, h in histories.items():
        a.plot(h["epoch"], h["train_loss"], label=f"{name} train")
        a.plot(h["epoch"], h["val_loss"], "--", label=f"{name} val")
        b.plot(h["epoch"], h["macro_auroc"], marker="o", label=name)
    a.set_xlabel("epoch")
    a.set_ylabel("masked BCE")
    b.set_xlabel("epoch")
    b.set_ylabel("validation macro-AUROC")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def roc_curves(y: np.ndarray, score: np.ndarray, path: Path, title: str = "") -> Path:
    """One ROC curve per label (known labels only)."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    per = label_aurocs(y, score)
    for j, k in enumerate(LABELS):
        keep = ~np.isnan(y[:, j])
        if not np.isnan(per[j]):
            fpr, tpr, _ = roc_curve(y[keep, j], score[keep, j])
            ax.plot(fpr, tpr, label=f"{k} {per[j]:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def reliability(y: np.ndarray, before: np.ndarray, after: np.ndarray, path: Path, bins: int = 10) -> Path:
    """Observed positive rate against predicted probability, per label, before and after calibration."""
    from sklearn.calibration import calibration_curve

    plt = pyplot()
    fig, axes = plt.subplots(1, len(LABELS), figsize=(3.0 * len(LABELS), 3.0), squeeze=False)
    for j, (ax, k) in enumerate(zip(axes[0], LABELS)):
        keep = ~np.isnan(y[:, j])
        if len(np.unique(y[keep, j])) == 2:
            for p, name in ((before, "before"), (after, "after")):
                observed, predicted = calibration_curve(y[keep, j], p[keep, j], n_bins=bins)
                ax.plot(predicted, observed, marker="o", label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("observed")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
