"""Folds are data: a seeded, multilabel-stratified K-fold over patients, written once and read by every step."""
from __future__ import annotations

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from utils.core.labels import LABELS


def make_folds(df: pd.DataFrame, n_folds: int = 5, seed: int = 42, group_col: str = "group") -> np.ndarray:
    """Fold number per row: stratified on the five labels (unknown counted as negative), groups never split."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    groups = df[group_col].astype(str).to_numpy()
    uniq, inverse = np.unique(groups, return_inverse=True)
    if len(uniq) < n_folds:
        raise ValueError(f"only {len(uniq)} groups for {n_folds} folds")
    y = df[list(LABELS)].astype(float).fillna(0).to_numpy()
    per_group = np.zeros((len(uniq), len(LABELS)))
    np.maximum.at(per_group, inverse, y)
    fold_of_group = np.empty(len(uniq), int)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(uniq)), per_group)):
        fold_of_group[val] = k
    return fold_of_group[inverse]


def fold_prevalence(df: pd.DataFrame, fold_col: str = "fold") -> pd.DataFrame:
    """Rows and label prevalence per fold, with the whole set for comparison."""
    rows = []
    for name, part in [*df.groupby(fold_col), ("all", df)]:
        rows.append({"fold": name, "images": len(part), "groups": part["group"].nunique(),
                     **{k: round(float(part[k].astype(float).mean()), 4) for k in LABELS}})
    return pd.DataFrame(rows)


def split_stage1_validation(df: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """'stage1_val' for a seeded fraction of each source's Stage I groups (at least one where a source has two), so
    that a Stage I of any one kind of picture validates on its own kind; 'stage1' for the rest."""
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    sources = df["source"] if "source" in df else pd.Series("", index=df.index)
    for _, part in df.groupby(sources, sort=True):
        groups = np.array(sorted(part["group"].astype(str).unique()))
        k = int(round(len(groups) * fraction)) if fraction > 0 else 0
        k = 1 if fraction > 0 and k == 0 and len(groups) >= 2 else k
        val |= set(rng.choice(groups, size=k, replace=False)) if k else set()
    return df["group"].astype(str).map(lambda g: "stage1_val" if g in val else "stage1")
