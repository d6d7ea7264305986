"""CODE-15% (Ribeiro et al., Zenodo record 4916206) as a source of recorded waveforms to render, read as the paper's
Stage I used it.

The exams are not WFDB: `exams.csv` (exam_id, patient_id, the flags 1dAVb, RBBB, LBBB, SB, ST, AF, normal_ecg,
trace_file) and `exams_part0.hdf5` ... `exams_part17.hdf5`, each with a `tracings` dataset (N, 4096, 12) at 400 Hz,
every exam zero-padded to 4096 samples, and an `exam_id` dataset in which 0 marks a filler row. A part is about
1.4 GB: only its `exam_id` column is read up front; each exam's tracing is read when it is rendered. Values are taken
as millivolts, as the PhysioNet Challenge 2025 conversion of CODE-15% to WFDB does (its prepare_code15_data.py writes
them with units mV).

Labels as the data allows, never guessed: AF -> AF (annotated for every exam); 1dAVb, RBBB or LBBB -> CD positive; a
normal ECG (normal_ecg) -> all five negative; otherwise CD, MI, HYP and STTC are unknown (CODE-15% does not annotate
them, nor the other conduction disturbances). Patient ids become the groups that folds and the leakage check use.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.labels import LABELS
from utils.synth.wfdb_source import RecordError, RecordRef

CODE15_FS = 400
SOURCE = "code15"
CD_FLAGS = ("1dAVb", "RBBB", "LBBB")
REQUIRED = ("exam_id", "patient_id", "AF", *CD_FLAGS, "normal_ecg")
PART = re.compile(r"exams_part(\d+)\.hdf5$")
_OPEN: dict[str, object] = {}  # h5py files kept open per worker process


def _flag(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0", "yes")


def exam_labels(row) -> dict:
    """The five labels of one exams.csv row (None: unknown)."""
    af, cd = _flag(row["AF"]), any(_flag(row[k]) for k in CD_FLAGS)
    normal = _flag(row["normal_ecg"]) and not (af or cd)
    rest = 0 if normal else None
    return {"MI": rest, "AF": int(af), "HYP": rest, "CD": 1 if cd else rest, "STTC": rest}


def read_exams_table(root: Path) -> pd.DataFrame:
    path = Path(root) / "exams.csv"
    if not path.is_file():
        raise FileNotFoundError(f"CODE-15%: no exams.csv in {root}")
    try:
        table = pd.read_csv(path, dtype={"trace_file": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; CODE-15%'s exams.csv has {list(REQUIRED)}")
    bad = table[pd.to_numeric(table["exam_id"], errors="coerce").isna()]
    if len(bad):
        raise ValueError(f"{path}: row {int(bad.index[0]) + 2} has exam_id {bad['exam_id'].iloc[0]!r}, not a number")
    return table.assign(exam_id=table["exam_id"].astype(np.int64))


def part_files(root: Path) -> list[Path]:
    """exams_partN.hdf5 files under root, in part order."""
    found = [p for p in Path(root).rglob("exams_part*.hdf5") if PART.search(p.name)]
    return sorted(found, key=lambda p: int(PART.search(p.name).group(1)))


def _index_part(path: Path) -> np.ndarray:
    """The exam ids of one part, row by row (0: filler); reads no tracing."""
    import h5py

    with h5py.File(path, "r") as f:
        if "exam_id" not in f or "tracings" not in f:
            raise ValueError(f"has no 'exam_id' and 'tracings' datasets (has {sorted(f.keys())})")
        ids = np.asarray(f["exam_id"][:], dtype=np.int64)
        shape = f["tracings"].shape
    if len(shape) != 3 or shape[0] != len(ids) or shape[2] != 12:
        raise ValueError(f"tracings of shape {shape} do not match {len(ids)} exam ids x samples x 12 leads")
    return ids


def list_exams(root: Path) -> tuple[list[RecordRef], list[tuple[str, str]]]:
    """Every exam of exams.csv found in a readable part, with its labels and patient; problems as (what, why).

    A part that cannot be read is one problem naming the file; the other parts are still read."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CODE-15% folder not found: {root}")
    table = read_exams_table(root).set_index("exam_id")
    parts = part_files(root)
    if not parts:
        raise FileNotFoundError(f"CODE-15%: no exams_part*.hdf5 under {root}")
    refs, problems = [], []
    for part in parts:
        try:
            ids = _index_part(part)
        except Exception as exc:  # noqa: BLE001 - h5py raises OSError and others for a cut or corrupt file
            problems.append((part.name, f"unreadable, skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}"))
            continue
        for row, exam_id in enumerate(ids):
            if exam_id == 0:
                continue  # filler row
            if exam_id not in table.index:
                problems.append((f"{part.name}:{row}", f"exam {exam_id} has no row in exams.csv; left out"))
                continue
            info = table.loc[exam_id]
            refs.append(RecordRef(f"code15_{exam_id}", part, exam_labels(info), f"c{int(info['patient_id'])}",
                                  SOURCE, index=row))
    if "trace_file" in table.columns:
        read = {p.name for p in parts} - {name for name, _ in problems if name.endswith(".hdf5")}
        found = {r.id for r in refs}
        lost = table[table["trace_file"].isin(read) & ~table.index.map(lambda e: f"code15_{e}" in found)]
        problems += [(f"code15_{e}", f"listed in {r.trace_file} but not found there") for e, r in lost.iterrows()]
    return refs, problems


def _dataset(path: Path):
    import h5py

    key = str(path)
    if key not in _OPEN:
        _OPEN[key] = h5py.File(path, "r")
    return _OPEN[key]["tracings"]


def trim_padding(sig: np.ndarray) -> np.ndarray:
    """(samples, 12) without the all-zero rows before and after the recording."""
    nonzero = np.flatnonzero(np.any(sig != 0, axis=1))
    if not len(nonzero):
        raise RecordError("the tracing is all zeros (padding only)")
    return sig[nonzero[0]: nonzero[-1] + 1]


def load_code15(ref: RecordRef, fs: int = 500, duration: float = 10.0) -> np.ndarray:
    """(12, fs*duration) float32 mV in the standard lead order, padding cut, resampled from 400 Hz."""
    from scipy.signal import resample_poly

    try:
        sig = np.asarray(_dataset(ref.path)[ref.index], dtype=np.float64)  # one exam: (4096, 12)
    except Exception as exc:  # noqa: BLE001
        raise RecordError(f"{ref.path.name} row {ref.index}: unreadable: {type(exc).__name__}: {exc}") from None
    sig = trim_padding(sig).T
    if not np.isfinite(sig).all():
        raise RecordError("non-finite samples in the tracing")
    if sig.shape[1] < CODE15_FS * 2.5:
        raise RecordError(f"only {sig.shape[1] / CODE15_FS:.1f} s of signal; at least 2.5 s are needed")
    if fs != CODE15_FS:
        sig = resample_poly(sig, fs, CODE15_FS, axis=1)
    n = int(round(fs * duration))
    out = np.full((12, n), np.nan, np.float32)  # shorter exams leave the end of the page empty
    out[:, : min(n, sig.shape[1])] = sig[:, :n]
    return out


def label_counts(refs: list[RecordRef]) -> pd.DataFrame:
    """Positives, negatives and unknowns per label after the mapping."""
    rows = []
    for k in LABELS:
        values = [r.labels.get(k) for r in refs]
        rows.append({"label": k, "positive": sum(v == 1 for v in values), "negative": sum(v == 0 for v in values),
                     "unknown": sum(v is None for v in values)})
    return pd.DataFrame(rows)
