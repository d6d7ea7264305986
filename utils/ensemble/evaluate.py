"""Step 05: voting rules compared, calibration, the test set predicted, and AUROC by rule and by artefact severity."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.core.metrics import auroc_row
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
    """Per-fold probabilities (folds, n, 5) for the rows' original pictures, in batches on the predictor's device;
    unreadable pictures are listed and keep NaN."""
    out = np.full((len(predictor.models), len(rows), len(LABELS)), np.nan)
    problems, pending = [], []  # pending: (row index, its views as tensors)

    def flush():
        x = torch.cat([views for _, views in pending])
        probs = np.stack(predictor.fold_probs(x))  # (folds, views in the batch, 5)
        start = 0
        for i, views in pending:
            out[:, i] = probs[:, start:start + len(views)].mean(axis=1)  # test-time views averaged per picture
            start += len(views)
        pending.clear()

    for i, r in enumerate(tqdm(rows.itertuples(), total=len(rows), desc="predict test", unit="img")):
        try:
            img = read_image(r.image).image
        except ImageReadError as exc:
            problems.append({"id": r.id, "image": r.image, "error": str(exc)})
            continue
        prepared, _ = predictor.prepare(img)
        views = [prepared] + (tta_views(prepared) if tta else [])
        pending.append((i, torch.cat([predictor.tensor(v) for v in views])))
        if sum(len(v) for _, v in pending) >= batch_size:
            flush()
    if pending:
        flush()
    return out, problems


def tta_views(img: np.ndarray) -> list[np.ndarray]:
    """Changes that keep an ECG's meaning: a slight zoom-in crop, brighter and darker copies. Never flips."""
    h, w = img.shape[:2]
    dy, dx = int(h * 0.03), int(w * 0.03)
    return [img[dy:h - dy, dx:w - dx], cv2.convertScaleAbs(img, alpha=1.08), cv2.convertScaleAbs(img, alpha=0.92)]


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
