"""Checks of the synthesizer that print numbers: no shortcut in global image statistics, labels learnable
from simple signal features, and simulated measurements against real PTB-XL records."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from utils.core.labels import LABELS
from utils.synth.generate import SynthSettings, make_sample
from utils.synth.labels import sample_labels
from utils.synth.measure import FEATURES, measure
from utils.synth.waveform import simulate
from utils.synth.wfdb_source import RecordError, load_signals


def global_image_stats(jpeg: bytes) -> np.ndarray:
    """What a shortcut could use: size, aspect, colour means and spreads, colour histograms."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    small = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float32)
    hist = [np.histogram(small[:, c], bins=8, range=(0, 256))[0] / len(small) for c in range(3)]
    return np.concatenate([[w, h, w / h], small.mean(0), small.std(0), *hist])


def cv_auroc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Five-fold cross-validated AUROC of a standardised logistic regression."""
    clf = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=3000, C=0.3))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def chance_band(y: np.ndarray, z: float = 3.0) -> float:
    """Half-width of the AUROC band a random score stays in (Hanley-McNeil standard error at 0.5, times z)."""
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    return z * float(np.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1)))


def shortcut_check(settings: SynthSettings, n: int = 300, start: int = 0, flat: bool = False) -> pd.DataFrame:
    """Per label: AUROC of a classifier on global image statistics, with the chance band for this n.

    `flat=True` draws every trace as a flat line (same labels, same styles): what is left is what the style
    and artefacts alone could tell, separating it from the ink of the waveform itself (tall LVH complexes).
    """
    feats, labels = [], []
    flat_signals = np.zeros((12, int(10 * settings.fs)), np.float32) if flat else None
    for i in range(start, start + n):
        drawn = sample_labels(np.random.default_rng([settings.seed, i, 0, 0])) if flat else None
        data, ann, _ = make_sample(settings, i, signals=flat_signals, labels=drawn)
        feats.append(global_image_stats(data))
        labels.append([ann["labels"][k] for k in LABELS])
    x, y = np.array(feats), np.array(labels)
    rows = [{"label": k, "positives": int(y[:, j].sum()), "auroc": round(cv_auroc(x, y[:, j]), 3),
             "chance_band": round(chance_band(y[:, j]), 3)} for j, k in enumerate(LABELS)]
    return pd.DataFrame(rows)


def learnability_check(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Per label: AUROC of a classifier on simple measurements of the simulated signals."""
    feats, labels = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        lab = sample_labels(rng)
        m = measure(simulate(lab, rng).signals)
        feats.append([m[f] for f in FEATURES])
        labels.append([lab[k] for k in LABELS])
    x, y = np.array(feats), np.array(labels)
    return pd.DataFrame([{"label": k, "positives": int(y[:, j].sum()), "auroc": round(cv_auroc(x, y[:, j]), 3)}
                         for j, k in enumerate(LABELS)])


def measured_with_real(refs, n_sim: int = 400) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measurements (FEATURES) and labels of real records (refs; unreadable ones skipped) and of n_sim simulated ones,
    each row with its source ("real" or "sim")."""
    feats, labs = [], []
    for ref in refs:
        try:
            feats.append({"source": "real", **measure(load_signals(ref))})
            labs.append(ref.labels)
        except RecordError:
            continue
    for i in range(n_sim):
        rng = np.random.default_rng([7, i])
        lab = sample_labels(rng)
        feats.append({"source": "sim", **measure(simulate(lab, rng).signals)})
        labs.append(lab)
    return pd.DataFrame(feats), pd.DataFrame(labs)[list(LABELS)]


MEDIAN_FEATURES = ("hr", "rr_cv", "qrs_ms", "pr_ms", "qt_ms", "p_amp_II", "q_depth_max", "sokolow_mv", "r_amp_II",
                   "r_amp_V5", "s_amp_V1", "st_max_mv", "st_min_mv", "t_amp_V5", "qrs_axis_deg")


def compare_with_real(refs, n_sim: int = 400) -> pd.DataFrame:
    """Median of each measurement for normals and per label: real records (refs) beside simulated ones."""
    return feature_medians(*measured_with_real(refs, n_sim))


def feature_medians(f: pd.DataFrame, lab: pd.DataFrame, features=MEDIAN_FEATURES) -> pd.DataFrame:
    """compare_with_real's table from measured_with_real's frames."""
    lab = lab.fillna(0)
    rows = []
    for source in ("real", "sim"):
        part = (f["source"] == source).to_numpy()
        groups = {"NORM": lab[part].sum(1) == 0, **{k: lab[part][k] == 1 for k in LABELS}}
        for name, sel in groups.items():
            rows.append({"group": name, "source": source, "n": int(sel.sum()),
                         **f[part][sel.to_numpy()][list(features)].median().round(3).to_dict()})
    return pd.DataFrame(rows).sort_values(["group", "source"], key=lambda s: s.map(
        {g: i for i, g in enumerate(["NORM", *LABELS, "real", "sim"])})).reset_index(drop=True)


def separability(f: pd.DataFrame, lab: pd.DataFrame) -> pd.DataFrame:
    """From measured_with_real's frames: the AUROC of each measurement alone for each label, real beside simulated,
    showing a cue the simulator makes stronger or weaker than real ECGs do (a label's unknown rows left out)."""
    rows = []
    for name in FEATURES:
        row = {"feature": name}
        for k in LABELS:
            for source in ("real", "sim"):
                ok = ((f["source"] == source) & f[name].notna() & lab[k].notna()).to_numpy()
                y = lab[k][ok]
                row[f"{k}_{source}"] = round(roc_auc_score(y, f[name][ok]), 3) if 0 < y.sum() < len(y) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
