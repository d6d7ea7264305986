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
from utils.synth.measure import FEATURES, LEAD_FEATURES, measure
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
    rows = []
    for source in ("real", "sim"):
        part = (f["source"] == source).to_numpy()
        for name, sel in _groups(lab).items():
            rows.append({"group": name, "source": source, "n": int((sel & part).sum()),
                         **f[sel & part][list(features)].median().round(3).to_dict()})
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


# The measured table's rows: intervals, axis, voltage criteria, then per lead ST at J+60 ms, T, R and S amplitudes.
TABLE_FEATURES = ("hr", "pr_ms", "qrs_ms", "qt_ms", "qrs_axis_deg", "q_depth_max", "sokolow_mv", "cornell_mv",
                  *LEAD_FEATURES)
# A measure's distributions overlap in a group when a random real record and a random simulated one are ordered by
# it at most 65:35 either way (the AUROC of "simulated" on that measure within 0.35-0.65).
OVERLAP_BAND = 0.15
FIGURE_FEATURES = ("qrs_ms", "qt_ms", "qrs_axis_deg", "sokolow_mv", "r_V2", "r_V3", "s_V2", "st_V2", "st_V5",
                   "t_V2", "t_V5", "t_aVL")


def _groups(lab: pd.DataFrame) -> dict[str, np.ndarray]:
    """NORM (no label) and each label's positives, as boolean rows of lab (unknown labels count as absent)."""
    known = lab.fillna(0)
    return {"NORM": (known.sum(axis=1) == 0).to_numpy(), **{k: (known[k] == 1).to_numpy() for k in LABELS}}


def overlap_table(f: pd.DataFrame, lab: pd.DataFrame, features=TABLE_FEATURES) -> pd.DataFrame:
    """From measured_with_real's frames: per group (NORM and each label) and measure, the real and simulated
    medians with their 25th-75th percentiles, and the AUROC of "simulated" on the measure (0.5: the two distributions
    cannot be told apart by it), with `overlaps` when it lies within 0.5 +- OVERLAP_BAND."""
    real, sim = (f["source"] == "real").to_numpy(), (f["source"] == "sim").to_numpy()
    rows = []
    for group, sel in _groups(lab).items():
        for name in features:
            a, b = f[name][sel & real].dropna(), f[name][sel & sim].dropna()
            row = {"group": group, "measure": name, "n_real": len(a), "n_sim": len(b)}
            for source, x in (("real", a), ("sim", b)):
                q = np.percentile(x, [25, 50, 75]) if len(x) else [np.nan] * 3
                row |= {f"{source}_median": round(q[1], 3), f"{source}_q25": round(q[0], 3),
                        f"{source}_q75": round(q[2], 3)}
            auc = roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]) if len(a) and len(b) else np.nan
            rows.append(row | {"sim_vs_real_auroc": round(float(auc), 3),
                               "overlaps": bool(abs(auc - 0.5) <= OVERLAP_BAND) if np.isfinite(auc) else np.nan})
    return pd.DataFrame(rows)


def overlap_summary(table: pd.DataFrame) -> pd.DataFrame:
    """overlap_table per group: how many measures overlap, and the three that differ most."""
    rows = []
    for group, part in table.groupby("group", sort=False):
        part = part.dropna(subset=["sim_vs_real_auroc"])
        worst = part.assign(gap=(part["sim_vs_real_auroc"] - 0.5).abs()).nlargest(3, "gap")
        rows.append({"group": group, "records_real": int(part["n_real"].max()), "records_sim": int(part["n_sim"].max()),
                     "overlapping": f"{int(part['overlaps'].sum())} of {len(part)}",
                     "furthest apart": ", ".join(f"{m} {a:.2f}" for m, a in
                                                 worst[["measure", "sim_vs_real_auroc"]].to_numpy())})
    return pd.DataFrame(rows)


def distribution_figure(f: pd.DataFrame, lab: pd.DataFrame, path, features=FIGURE_FEATURES) -> None:
    """Box plots of each measure per group, real beside simulated, written to path (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(lab)
    cols = 4
    fig, axes = plt.subplots(int(np.ceil(len(features) / cols)), cols, figsize=(4.2 * cols, 2.6 * np.ceil(
        len(features) / cols)), squeeze=False)
    for ax, name in zip(axes.flat, features):
        for i, (group, sel) in enumerate(groups.items()):
            for j, (source, colour) in enumerate((("real", "#c0392b"), ("sim", "#2c7fb8"))):
                x = f[name][sel & (f["source"] == source).to_numpy()].dropna()
                if len(x):
                    box = ax.boxplot(x, positions=[i * 3 + j], widths=0.8, showfliers=False, patch_artist=True)
                    box["boxes"][0].set(facecolor=colour, alpha=0.55)
                    box["medians"][0].set(color="black")
        ax.set_xticks([i * 3 + 0.5 for i in range(len(groups))], list(groups), fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.flat[len(features):]:
        ax.axis("off")
    fig.legend([plt.Rectangle((0, 0), 1, 1, fc="#c0392b", alpha=0.55), plt.Rectangle((0, 0), 1, 1, fc="#2c7fb8",
                                                                                   alpha=0.55)],
               ["real records", "simulated"], loc="upper center", ncol=2, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
