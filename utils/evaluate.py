"""Step 05: voting rules compared, calibration, thresholds, the test set predicted, the submission checked."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from .ensemble import VOTES, apply_temperature, bootstrap_auroc, combine, ece, fit_temperature
from .imageio import ImageReadError, read_image
from .io import atomic_write_text
from .metrics import LABELS


class SubmissionError(ValueError):
    """A submission that would be rejected or wrong; nothing is written."""


def oof_arrays(oof: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = oof[list(LABELS)].to_numpy(float)
    y = oof[[f"y_{k}" for k in LABELS]].to_numpy(float)
    return p, np.nan_to_num(y), ~np.isnan(y)


def _auroc(y, p, known) -> dict:
    out = {}
    for j, k in enumerate(LABELS):
        keep = known[:, j]
        yy = y[keep, j]
        out[k] = roc_auc_score(yy, p[keep, j]) if 0 < yy.sum() < len(yy) else np.nan
    out["macro"] = float(np.nanmean(list(out.values())))
    return out


def compare_votes_oof(oof: pd.DataFrame) -> pd.DataFrame:
    """Each OOF row has one model: hard voting there is a 0/1 score, which is what the paper's rule does to AUROC."""
    p, y, known = oof_arrays(oof)
    return pd.DataFrame([{"rule": r, **_auroc(y, combine([p], r), known)} for r in VOTES]).round(4)


def calibrate(oof: pd.DataFrame) -> tuple[list[float], pd.DataFrame, np.ndarray]:
    """Per-label temperatures fitted on OOF; ECE before and after; the calibrated OOF probabilities."""
    p, y, known = oof_arrays(oof)
    temps, rows = [], []
    for j, k in enumerate(LABELS):
        keep = known[:, j]
        t = fit_temperature(p[keep, j], y[keep, j]) if 0 < y[keep, j].sum() < keep.sum() else 1.0
        temps.append(t)
        q = apply_temperature(p[keep, j], t)
        rows.append({"label": k, "temperature": round(t, 3), "ece_before": round(ece(p[keep, j], y[keep, j]), 4),
                     "ece_after": round(ece(q, y[keep, j]), 4)})
    return temps, pd.DataFrame(rows), apply_temperature(p, temps)


def predict_rows(predictor, rows: pd.DataFrame, tta: bool = False) -> tuple[np.ndarray, list[dict]]:
    """Per-fold probabilities (folds, n, 5) for the rows' original pictures; unreadable ones are listed."""
    from .cache import prepare

    out = np.full((len(predictor.models), len(rows), len(LABELS)), np.nan)
    problems = []
    for i, r in enumerate(tqdm(rows.itertuples(), total=len(rows), desc="predict test", unit="img")):
        try:
            img = read_image(r.image).image
        except ImageReadError as exc:
            problems.append({"id": r.id, "image": r.image, "error": str(exc)})
            continue
        prepared, _ = prepare(img, predictor.prep, predictor.detector)
        views = [prepared] + (tta_views(prepared) if tta else [])
        probs = np.mean([predictor.fold_probs(predictor.tensor(v)) for v in views], axis=0)  # (folds, 1, 5)
        out[:, i] = probs[:, 0]
    return out, problems


def tta_views(img: np.ndarray) -> list[np.ndarray]:
    """Changes that keep an ECG's meaning: a slight zoom-in crop, brighter and darker copies. Never flips."""
    h, w = img.shape[:2]
    dy, dx = int(h * 0.03), int(w * 0.03)
    return [img[dy:h - dy, dx:w - dx], cv2.convertScaleAbs(img, alpha=1.08), cv2.convertScaleAbs(img, alpha=0.92)]


def test_scores(fold_probs: np.ndarray, y: np.ndarray | None, temps) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Each voting rule's test scores (soft is calibrated); their AUROC when the test labels are known."""
    scores = {r: combine(list(fold_probs), r) for r in VOTES}
    scores["soft"] = apply_temperature(scores["soft"], temps)
    if y is None:
        return scores, pd.DataFrame()
    known = ~np.isnan(y)
    table = pd.DataFrame([{"rule": r, **_auroc(np.nan_to_num(y), s, known)} for r, s in scores.items()]).round(4)
    return scores, table


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
    cuts = np.nanpercentile(sev, [33.3, 66.7])
    bins = np.digitize(sev, cuts)
    out = []
    for b, name in enumerate(("mild", "medium", "severe")):
        sel = (bins == b) & ~np.isnan(sev)
        out.append({"severity": name, "images": int(sel.sum()),
                    **_auroc(np.nan_to_num(y[sel]), score[sel], ~np.isnan(y[sel]))})
    return pd.DataFrame(out).round(4)


def write_submission(path: Path, ids: list[str], probs: np.ndarray, sample: Path | None) -> pd.DataFrame:
    """Header and id order from sample_submission.csv when given; checked before anything is written."""
    if Path(path).exists():
        raise SubmissionError(f"{path} exists: nothing is overwritten")
    frame = pd.DataFrame(probs, columns=list(LABELS))
    frame.insert(0, "id", ids)
    if sample is not None and Path(sample).is_file():
        ref = pd.read_csv(sample, dtype=str)
        id_col = ref.columns[0]
        by_lower = {c.lower(): c for c in ref.columns}
        missing_cols = [k for k in LABELS if k.lower() not in by_lower]
        if missing_cols:
            raise SubmissionError(f"{sample}: no column for {missing_cols}")
        want, have = list(ref[id_col]), set(frame["id"])
        if set(want) != have:
            raise SubmissionError(f"ids differ from {sample}: {len(set(want) - have)} missing, "
                                  f"{len(have - set(want))} extra (e.g. {sorted(set(want) ^ have)[:3]})")
        frame = frame.set_index("id").loc[want].reset_index()
        frame.columns = [id_col] + [by_lower[k.lower()] for k in LABELS]
        frame = frame[list(ref.columns)]
    values = frame.iloc[:, 1:].to_numpy(float)
    if np.isnan(values).any():
        raise SubmissionError(f"{int(np.isnan(values).any(1).sum())} row(s) have no prediction")
    if (values < 0).any() or (values > 1).any():
        raise SubmissionError("probabilities outside [0, 1]")
    if frame.iloc[:, 0].duplicated().any():
        raise SubmissionError("duplicate ids")
    atomic_write_text(Path(path), frame.to_csv(index=False))
    return frame


def bootstrap_table(y: np.ndarray, score: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    ci = bootstrap_auroc(np.nan_to_num(y), score, n, seed)
    return pd.DataFrame([{"label": k, "auroc": round(v[0], 4), "ci_low": round(v[1], 4), "ci_high": round(v[2], 4)}
                         for k, v in ci.items()])


def submission_ids(rows: pd.DataFrame) -> list[str]:
    """The ids the competition knows: its own for competition rows, the part after 'source:' otherwise."""
    own = rows["submission_id"] if "submission_id" in rows else pd.Series(np.nan, index=rows.index)
    return [str(s) if isinstance(s, str) and s else str(i).split(":", 1)[-1] for s, i in zip(own, rows["id"])]


def sample_submission_path(step01_dir: Path) -> Path | None:
    """sample_submission.csv of the target source recorded by step 01."""
    info = json.loads((Path(step01_dir) / "sources.json").read_text())
    for src in info["sources"]:
        if src["role"] == "target" and (Path(src["root"]) / "sample_submission.csv").is_file():
            return Path(src["root"]) / "sample_submission.csv"
    return None
