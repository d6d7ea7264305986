"""The one masked AUROC: per label over known rows only (an unknown label is never a negative), its macro mean,
and percentile bootstrap intervals, plain or paired (two scorings of the same pictures)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from utils.core.labels import LABELS


def logit(p) -> np.ndarray:
    """Log-odds of probabilities, clipped to [1e-6, 1 - 1e-6] so 0 and 1 stay finite (temperatures, blends)."""
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def known_mask(y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Known labels: not NaN in y and, when a mask is given, set there too."""
    y = np.asarray(y, float)
    known = ~np.isnan(y)
    return known if mask is None else known & np.asarray(mask, bool)


def label_aurocs(y: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(5,) AUROC per label over its known rows; NaN where those rows hold one class only."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    known = known_mask(y, mask)
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        yy = y[known[:, j], j]
        if 0 < yy.sum() < len(yy):
            out[j] = roc_auc_score(yy, p[known[:, j], j])
    return out


def macro(per: np.ndarray) -> float:
    """Mean over the labels that have an AUROC (NaN when none has)."""
    per = np.asarray(per, float)
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def auroc_table(y: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None,
                warn: bool = True) -> tuple[float, dict[str, float]]:
    """Macro-AUROC over the labels that have both classes among known rows, and the per-label values."""
    per = label_aurocs(y, p, mask)
    if warn:
        for k, v in zip(LABELS, per):
            if math.isnan(v):
                warnings.warn(f"{k}: only one class among its known rows; left out of the macro-AUROC")
    return macro(per), {k: float(v) for k, v in zip(LABELS, per)}


def _interval(draws: np.ndarray) -> tuple[float, float]:
    draws = np.asarray(draws, float)
    if not np.isfinite(draws).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_auroc(y: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None, n: int = 1000, seed: int = 0,
                    baseline: np.ndarray | None = None) -> dict[str, tuple[float, float, float]]:
    """{label: (point, low, high)} and "macro", 95% percentile intervals from resampling rows.

    With `baseline` (another scoring of the same rows), every figure is p's AUROC minus the baseline's, resampled in
    pairs. A resample in which a label holds one class leaves that label out of that resample's macro.
    """
    y, p = np.asarray(y, float), np.asarray(p, float)
    known = known_mask(y, mask)

    def scores(idx):
        per = label_aurocs(y[idx], p[idx], known[idx])
        if baseline is not None:
            per = per - label_aurocs(y[idx], np.asarray(baseline, float)[idx], known[idx])
        return per

    rng = np.random.default_rng(seed)
    point = scores(np.arange(len(y)))
    draws = np.array([scores(rng.integers(0, len(y), len(y))) for _ in range(n)]).reshape(n, y.shape[1])
    out = {k: (float(point[j]), *_interval(draws[:, j])) for j, k in enumerate(LABELS)}
    with warnings.catch_warnings():  # a resample with no label of two classes has no macro: it is left out
        warnings.simplefilter("ignore", RuntimeWarning)
        macros = np.nanmean(draws, axis=1)
    out["macro"] = (macro(point), *_interval(macros))
    return out


def bootstrap_table(y: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None, n: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """The bootstrap as a table: label, auroc, ci_low, ci_high (macro last)."""
    ci = bootstrap_auroc(y, p, mask, n, seed)
    return pd.DataFrame([{"label": k, "auroc": round(v[0], 4), "ci_low": round(v[1], 4), "ci_high": round(v[2], 4)}
                         for k, v in ci.items()])


def format_interval(point, lo, hi) -> str:
    """`0.712 [0.680, 0.741]`, or '-' when there is no figure."""
    return "-" if point is None or np.isnan(point) else f"{point:.3f} [{lo:.3f}, {hi:.3f}]"


def auroc_row(y: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """{label: AUROC, ..., "macro": mean} for one table row."""
    per = label_aurocs(y, p, mask)
    return {**{k: float(v) for k, v in zip(LABELS, per)}, "macro": macro(per)}
