"""Label sampling: the competition's prevalence with realistic co-occurrence (a Gaussian copula)."""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from utils.core.labels import LABELS

# Training prevalence of the BHF ECG Challenge (Wang et al., Table 1).
PREVALENCE = {"MI": 0.254, "AF": 0.069, "HYP": 0.123, "CD": 0.209, "STTC": 0.243}
# Latent correlations giving the overlaps seen in PTB-XL: MI with CD, STTC and AF, HYP with STTC (strain) and CD, AF
# with STTC (observed in 771 PTB-XL records: AF-STTC 0.26, MI-CD 0.20, HYP-STTC 0.19, MI-AF 0.17).
CORRELATION = {("MI", "CD"): 0.25, ("MI", "STTC"): 0.15, ("HYP", "STTC"): 0.35, ("HYP", "CD"): 0.15,
               ("AF", "STTC"): 0.35, ("AF", "CD"): 0.10, ("MI", "HYP"): 0.10, ("MI", "AF"): 0.25}


def correlation_matrix(pairs: dict = CORRELATION) -> np.ndarray:
    c = np.eye(len(LABELS))
    for (a, b), rho in pairs.items():
        i, j = LABELS.index(a), LABELS.index(b)
        c[i, j] = c[j, i] = rho
    if np.linalg.eigvalsh(c).min() <= 0:
        raise ValueError("label correlations do not form a valid correlation matrix")
    return c


def sample_labels(rng: np.random.Generator, prevalence: dict | None = None,
                  correlation: dict | None = None) -> dict[str, int]:
    """One record's five labels: marginals equal `prevalence` in expectation."""
    prev = {**PREVALENCE, **(prevalence or {})}
    unknown = set(prev) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown label(s) in prevalence: {sorted(unknown)}; labels are {LABELS}")
    chol = np.linalg.cholesky(correlation_matrix(correlation or CORRELATION))
    z = chol @ rng.standard_normal(len(LABELS))
    thresholds = norm.ppf([1 - prev[k] for k in LABELS])
    return {k: int(z[i] > thresholds[i]) for i, k in enumerate(LABELS)}
