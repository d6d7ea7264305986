"""Step 05: voting rules compared, calibration, the test set predicted, and AUROC by rule and by artefact severity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.labels import LABELS
from utils.core.figures import roc_curves
from utils.core.metrics import auroc_row, bootstrap_table
from utils.ensemble.submission import test_truth_or_none
from utils.ensemble.vote import VOTES, Calibration, combine, fit_calibration, vote_scores


def oof_arrays(oof: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities (n, 5) and labels (n, 5, NaN where unknown)."""
    return oof[list(LABELS)].to_numpy(float), oof[[f"y_{k}" for k in LABELS]].to_numpy(float)


def compare_votes_oof(oof: pd.DataFrame) -> pd.DataFrame:
    """Each OOF row has one model: hard voting there is a 0/1 score, which is what the paper's rule does to AUROC."""
    p, y = oof_arrays(oof)
    return pd.DataFrame([{"rule": r, **auroc_row(y, combine([p], r))} for r in VOTES]).round(4)


def calibrate(oof: pd.DataFrame) -> tuple[Calibration, pd.DataFrame, np.ndarray]:
    """Temperatures and F1 thresholds fitted on OOF; the table (ECE before/after, threshold); calibrated OOF."""
    p, y = oof_arrays(oof)
    return fit_calibration(p, y)


def predict_rows(predictor, rows: pd.DataFrame, tta: bool = False, batch_size: int = 32
                 ) -> tuple[np.ndarray, list[dict]]:
    """Per-fold probabilities (folds, n, 5) for the rows' original pictures, through Predictor.read without the
    signal reader (nothing digitised); pictures that cannot be read or prepared are listed and keep NaN."""
    fold_probs, _, _, problems = read_rows(predictor, rows, tta, batch_size, signal=False)
    return fold_probs, problems


def read_rows(predictor, rows: pd.DataFrame, tta: bool = False, batch_size: int = 32, signal: bool = True
              ) -> tuple[np.ndarray, np.ndarray | None, list[str], list[dict]]:
    """predict_rows with the signal reader's side: (fold probabilities (folds, n, 5), the signal reader's (n, 5;
    NaN where a picture was not digitised; None without a signal reader or with `signal` false), each picture's
    digitiser note, problems)."""
    out = np.full((len(predictor.models), len(rows), len(LABELS)), np.nan)
    read_signal = signal and predictor.signal is not None
    signal = np.full((len(rows), len(LABELS)), np.nan) if read_signal else None
    notes = [""] * len(rows)
    problems = []
    for r in predictor.read(rows["image"].tolist(), tta, batch_size, desc="predict", signal=read_signal):
        if r.error:
            problems.append({"id": rows["id"].iloc[r.index], "image": rows["image"].iloc[r.index], "error": r.error})
            continue
        out[:, r.index] = r.fold_probs
        if signal is not None:
            signal[r.index] = r.signal_probs
            notes[r.index] = r.rec["digitised"].note()
    return out, signal, notes, problems


def with_signal(predictor, fold_probs: np.ndarray, signal: np.ndarray | None, y: np.ndarray | None,
                scores: dict[str, np.ndarray], table: pd.DataFrame) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The rules' scores and AUROC table with the signal reader alone (a picture not digitised at 0.5) and the
    package's ensemble of both readers beside them; unchanged without a signal reader."""
    if signal is None:
        return scores, table
    scores = {**scores, "signal reader": np.where(np.isnan(signal), 0.5, signal),
              "ensemble": predictor.ensemble(fold_probs, signal)[0]}
    if y is None:
        return scores, table
    extra = pd.DataFrame([{"rule": r, **auroc_row(y, scores[r])} for r in ("signal reader", "ensemble")]).round(4)
    return scores, pd.concat([table, extra], ignore_index=True)


def package_rule(scores: dict[str, np.ndarray], rule: str) -> str:
    """The scores the package gives: both readers' ensemble where there is a signal reader, else the voting rule."""
    return "ensemble" if "ensemble" in scores else rule


def rule_scores(fold_probs: np.ndarray, y: np.ndarray | None, calibration: Calibration
                ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Each voting rule's scores (soft calibrated); their AUROC when the labels are known."""
    scores = {r: vote_scores(fold_probs, r, calibration) for r in VOTES}
    if y is None:
        return scores, pd.DataFrame()
    return scores, pd.DataFrame([{"rule": r, **auroc_row(y, s)} for r, s in scores.items()]).round(4)


def severity_score(annotation: dict) -> float:
    """One number for how hard a synthetic picture is: perspective, rotation, blur, noise, shadows, JPEG."""
    a = annotation.get("artefacts", {})
    return (abs(a.get("keystone", 0)) * 5 + abs(a.get("rotation_deg", 0)) / 10 + a.get("defocus_sigma", 0)
            + a.get("blur_sigma", 0) + a.get("noise_sigma", 0) / 6 + len(a.get("shadows", [])) / 3
            + a.get("motion_blur_px", 0) / 9 + (95 - a.get("jpeg_quality", 95)) / 35)


def split_by_severity(rows: pd.DataFrame, score: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Macro-AUROC per tertile of artefact severity (pictures with a synthesizer annotation only)."""
    sev = []
    for img in rows["image"]:
        ann = Path(img).parent.parent / "annotations" / f"{Path(img).stem}.json"
        sev.append(severity_score(json.loads(ann.read_text())) if ann.is_file() else np.nan)
    sev = np.array(sev)
    if np.isnan(sev).all():
        return pd.DataFrame()
    bins = np.digitize(sev, np.nanpercentile(sev, [33.3, 66.7]))
    out = []
    for b, name in enumerate(("mild", "medium", "severe")):
        sel = (bins == b) & ~np.isnan(sev)
        out.append({"severity": name, "images": int(sel.sum()), **auroc_row(y[sel], score[sel])})
    return pd.DataFrame(out).round(4)


def test_report(step_dir: Path, rows: pd.DataFrame, final: np.ndarray, y: np.ndarray | None, rule: str,
                n_boot: int, seed: int) -> dict:
    """The test predictions, written (with the labels when they are known); with labels also the AUROC with bootstrap
    intervals, the ROC curves and the AUROC by artefact severity, each written beside them."""
    step_dir = Path(step_dir)
    pred = pd.DataFrame(final, columns=list(LABELS)).assign(id=rows["id"].to_numpy(), image=rows["image"].to_numpy())
    out = {}
    if y is not None:
        pred = pred.join(pd.DataFrame(y, columns=[f"y_{k}" for k in LABELS]))
        out["ci"] = bootstrap_table(y, final, n=n_boot, seed=seed)
        out["ci"].to_csv(step_dir / "test_auroc_ci.csv", index=False)
        out["roc"] = roc_curves(y, final, step_dir / "roc_test.png", f"test, {rule} vote")
        out["severity"] = split_by_severity(rows, final, y)
        out["severity"].to_csv(step_dir / "test_auroc_by_severity.csv", index=False)
    pred.to_csv(step_dir / "test_predictions.csv", index=False)
    return out | {"predictions": pred}


def style_table(predictor, manifest: pd.DataFrame, rule_table: pd.DataFrame, calibration: Calibration
                ) -> pd.DataFrame | str:
    """The test's AUROC by rule beside the same on the scan-like Stage I validation pictures, when they are labelled."""
    scan_rows = manifest[manifest["split"] == "stage1_val"].reset_index(drop=True)
    scan_y = test_truth_or_none(scan_rows) if len(scan_rows) else None
    if scan_y is None:
        return "no labelled scan-like validation pictures: no style comparison"
    scan_probs, _ = predict_rows(predictor, scan_rows)
    _, scan_table = rule_scores(scan_probs, scan_y, calibration)
    return pd.concat([rule_table.assign(style="photo (test)"), scan_table.assign(style="scan (Stage I val)")])
