"""The one vote, calibration and thresholds.

Fold models' probabilities are combined by a voting rule. Calibration (per-label temperature) and the F1 thresholds
are fitted together on the out-of-fold probabilities and always act on the calibrated soft-vote probability: the
thresholds are applied to the same kind of score they were fitted on, whatever rule ranks the pictures. Hard and rank
votes are scores for ranking (AUROC), not probabilities, so no temperature touches them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata
from sklearn.metrics import precision_recall_curve

from utils.core.labels import LABELS
from utils.core.metrics import known_mask, logit

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
        return np.stack([rankdata(p, axis=0) / len(p) for p in stack]).mean(0)
    raise ValueError(f"unknown voting rule {rule!r}: choose from {VOTES}")


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """One label's temperature T minimising the log-loss of sigmoid(logit(p) / T)."""
    z, y = logit(p), np.asarray(y, float)

    def nll(log_t):
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def apply_temperature(p: np.ndarray, temps) -> np.ndarray:
    return 1 / (1 + np.exp(-logit(p) / np.asarray(temps, float)))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of one label (equal-width bins)."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    idx = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def f1_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The score threshold that maximises F1 for one label (0.5 when the label has no positive)."""
    y = np.asarray(y, float)
    if not y.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def f1_thresholds(p: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> list[float]:
    """Per label, the F1-optimal threshold over its known rows."""
    known = known_mask(y, mask)
    y = np.nan_to_num(np.asarray(y, float))
    return [f1_threshold(p[known[:, j], j], y[known[:, j], j]) for j in range(p.shape[1])]


@dataclass(frozen=True)
class Calibration:
    """Per-label temperatures and the F1 thresholds fitted on the calibrated probabilities."""
    temperatures: tuple[float, ...] = (1.0,) * len(LABELS)
    thresholds: tuple[float, ...] = (0.5,) * len(LABELS)

    def probability(self, fold_probs) -> np.ndarray:
        """The calibrated soft-vote probability (n, 5)."""
        return apply_temperature(combine(list(fold_probs), "soft"), self.temperatures)

    def decide(self, probability: np.ndarray) -> np.ndarray:
        """Yes/no per label from the calibrated probability."""
        return (np.asarray(probability) >= np.asarray(self.thresholds)).astype(int)


def fit_calibration(p: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
                    ) -> tuple[Calibration, pd.DataFrame, np.ndarray]:
    """Temperatures fitted on out-of-fold probabilities, then thresholds on the calibrated ones.

    Returns the calibration, a table (temperature, ECE before and after, threshold per label) and the calibrated
    probabilities."""
    p = np.asarray(p, float)
    known = known_mask(y, mask)
    yy = np.nan_to_num(np.asarray(y, float))
    temps, rows = [], []
    for j, k in enumerate(LABELS):
        keep = known[:, j]
        t = fit_temperature(p[keep, j], yy[keep, j]) if 0 < yy[keep, j].sum() < keep.sum() else 1.0
        temps.append(t)
        rows.append({"label": k, "temperature": round(t, 3), "ece_before": round(ece(p[keep, j], yy[keep, j]), 4),
                     "ece_after": round(ece(apply_temperature(p[keep, j], t), yy[keep, j]), 4)})
    calibrated = apply_temperature(p, temps)
    thresholds = f1_thresholds(calibrated, y, mask)
    table = pd.DataFrame(rows).assign(threshold=np.round(thresholds, 4))
    return Calibration(tuple(float(t) for t in temps), tuple(float(t) for t in thresholds)), table, calibrated


def vote_scores(fold_probs, rule: str, calibration: Calibration) -> np.ndarray:
    """The ensemble's scores under a rule: soft is the calibrated probability; hard and rank are raw vote scores."""
    if rule == "soft":
        return calibration.probability(fold_probs)
    return combine(list(fold_probs), rule)


def noise_problem(entry) -> str:
    """What is wrong with a package's 'noise' entry ('' when nothing)."""
    band = entry.get("band") if isinstance(entry, dict) else None
    if not (isinstance(band, (list, tuple)) and len(band) == len(LABELS)
            and all(isinstance(b, (int, float)) and np.isfinite(b) and b >= 0 for b in band)):
        return f"'noise' {entry!r} has no 'band' of {len(LABELS)} numbers >= 0, one per label"
    return ""


def near_threshold(margins: np.ndarray, band) -> list[str]:
    """The labels whose decision (its margin from the threshold) lies within the re-encoding noise."""
    return [k for k, m, b in zip(LABELS, margins, band) if np.isfinite(m) and abs(m) < b]
