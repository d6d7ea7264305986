"""Step 05's submission: the test rows, their ids as the competition knows them, unreadable pictures filled with
the training prevalence (only when allowed, and listed), and a CSV checked against sample_submission.csv."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text
from utils.core.labels import LABELS


class SubmissionError(ValueError):
    """A submission that would be rejected or wrong; nothing is written."""


def select_test_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The target's test pictures, in the manifest's order."""
    return manifest[(manifest["stage"] == "II") & (manifest["split"] == "test")].reset_index(drop=True)


def test_truth_or_none(rows: pd.DataFrame) -> np.ndarray | None:
    """(n, 5) labels with NaN for unknown, or None when the test labels are hidden (the competition)."""
    y = rows[list(LABELS)].to_numpy(float)
    return y if (~np.isnan(y)).any() else None


def fill_unreadable(scores: np.ndarray, unreadable: list[dict], manifest: pd.DataFrame, allow: bool) -> np.ndarray:
    """Test pictures that could not be read get the training prevalence when allowed; otherwise an error names them."""
    missing = [r["id"] for r in unreadable]
    if missing and not allow:
        raise SubmissionError(f"{len(missing)} test picture(s) cannot be read: {missing[:5]}; "
                              "fix them or set allow_missing_test")
    train = manifest[(manifest["stage"] == "II") & (manifest["split"] == "train")]
    prevalence = np.nanmean(train[list(LABELS)].to_numpy(float), 0)
    return np.where(np.isnan(scores), prevalence, scores)


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
