"""Voting rules, calibration, thresholds and honest evaluation (bootstrap intervals)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata
from sklearn.metrics import f1_score, roc_auc_score

from .metrics import LABELS

VOTES = ("soft", "hard", "rank")


def combine(probs: list[np.ndarray], rule: str = "soft", threshold: float = 0.5) -> np.ndarray:
    """(n, 5) scores from several models' (n, 5) probabilities.

    soft: mean probability (the default: what AUROC rewards); hard: share of models voting positive (the paper's,
    at most k+1 distinct scores, so many ties); rank: mean of each model's ranks, scaled to [0, 1].
    """
    stack = np.stack([np.asarray(p, float) for p in probs])
    if rule == "soft":
        return stack.mean(0)
    if rule == "hard":
        return (stack >= threshold).mean(0)
    if rule == "rank":
        ranks = np.stack([rankdata(p, axis=0) / len(p) for p in stack])
        return ranks.mean(0)
    raise ValueError(f"unknown voting rule {rule!r}: choose from {VOTES}")


def _logit(p):
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """One label's temperature T minimising the log-loss of sigmoid(logit(p) / T)."""
    z, y = _logit(p), np.asarray(y, float)

    def nll(log_t):
        q = 1 / (1 + np.exp(-z / np.exp(log_t)))
        q = np.clip(q, 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def apply_temperature(p: np.ndarray, temps) -> np.ndarray:
    return 1 / (1 + np.exp(-_logit(p) / np.asarray(temps, float)))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of one label (equal-width bins)."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def f1_thresholds(p: np.ndarray, y: np.ndarray) -> list[float]:
    """Per label, the threshold that maximises F1 (searched over the observed scores)."""
    out = []
    for j in range(p.shape[1]):
        cands = np.unique(np.round(p[:, j], 4))
        scores = [f1_score(y[:, j], p[:, j] >= t, zero_division=0) for t in cands]
        out.append(float(cands[int(np.argmax(scores))]) if len(cands) else 0.5)
    return out


def bootstrap_auroc(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0) -> dict:
    """Macro and per-label AUROC with percentile 95% intervals (resampling rows)."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(y, float), np.asarray(p, float)

    def scores(idx):
        per = []
        for j in range(y.shape[1]):
            yy = y[idx, j]
            per.append(roc_auc_score(yy, p[idx, j]) if 0 < yy.sum() < len(yy) else np.nan)
        return per

    point = scores(np.arange(len(y)))
    draws = np.array([scores(rng.integers(0, len(y), len(y))) for _ in range(n)])
    out = {}
    for j, k in enumerate(LABELS):
        lo, hi = np.nanpercentile(draws[:, j], [2.5, 97.5]) if np.isfinite(draws[:, j]).any() else (np.nan, np.nan)
        out[k] = (float(point[j]), float(lo), float(hi))
    macro = np.nanmean(draws, axis=1)
    out["macro"] = (float(np.nanmean(point)), float(np.percentile(macro, 2.5)), float(np.percentile(macro, 97.5)))
    return out
