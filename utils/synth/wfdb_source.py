"""Real waveforms to render: WFDB records (PTB-XL layout, CinC-2021 headers, or any folder of .hea files).

Labels come from PTB-XL's scp_codes (MI, HYP, CD, STTC = diagnostic superclass; AF = AFIB), from a labels CSV, or
for CinC headers from their SNOMED `# Dx:` codes where the mapping is unambiguous (AF and CD); whatever a source
does not say stays unknown (None), never negative. Problems are collected per record, never raised.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.labels import LABELS, read_label_table
from utils.synth.waveform import LEADS

# SNOMED-CT codes of the CinC 2021 challenge (its dx_mapping_scored table) that map to our labels.
SNOMED_AF = {"164889003"}  # atrial fibrillation
SNOMED_CD = {"270492004": "1st degree AV block", "164909002": "LBBB", "733534002": "complete LBBB",
             "59118001": "RBBB", "713427006": "complete RBBB", "713426002": "incomplete RBBB",
             "445118002": "left anterior fascicular block", "698252002": "nonspecific IVCD"}
_ALIASES = {name.upper(): name for name in LEADS} | {"DI": "I", "DII": "II", "DIII": "III"}


class RecordError(ValueError):
    """A record that cannot be rendered; the message says why."""


@dataclass
class RecordRef:
    id: str
    path: Path  # record path without extension
    labels: dict = field(default_factory=dict)  # label -> 0/1, or None when unknown
    group: str = ""
    source: str = "wfdb"
    index: int | None = None  # row of a multi-record file (CODE-15%'s HDF5 parts)


PTBXL_TABLES = ("ptbxl_database.csv", "ptbxl_rows.csv")  # the full database, or a subset's rows of it


def _ptbxl_refs(root: Path, problems: list) -> list[RecordRef]:
    db = pd.read_csv(next(root / t for t in PTBXL_TABLES if (root / t).is_file()), index_col="ecg_id")
    statements = pd.read_csv(root / "scp_statements.csv", index_col=0)
    diag = statements[statements.get("diagnostic", 0) == 1]["diagnostic_class"].to_dict()
    refs = []
    for ecg_id, row in db.iterrows():
        try:
            codes = ast.literal_eval(row["scp_codes"])
        except (ValueError, SyntaxError):
            problems.append((str(ecg_id), f"scp_codes is not a dict literal: {row['scp_codes']!r}"))
            continue
        unknown = sorted(set(codes) - set(statements.index))
        if unknown:
            problems.append((str(ecg_id), f"unknown scp codes {unknown} (ignored; other codes still used)"))
        classes = {diag[c] for c in codes if c in diag}
        labels = {k: int(k in classes) for k in ("MI", "HYP", "CD", "STTC")} | {"AF": int("AFIB" in codes)}
        group = "" if pd.isna(row.get("patient_id")) else f"p{int(row['patient_id'])}"
        file = row["filename_hr"] if isinstance(row.get("filename_hr"), str) else row["filename_lr"]
        refs.append(RecordRef(f"ptbxl{int(ecg_id):05d}", root / file, labels, group, "ptbxl"))
    return refs


def _dx_labels(header: Path) -> dict:
    for line in header.read_text(errors="replace").splitlines():
        if line.startswith("#") and "Dx:" in line:
            codes = {c.strip() for c in line.split("Dx:", 1)[1].split(",") if c.strip()}
            return {"AF": int(bool(codes & SNOMED_AF)), "CD": int(bool(codes & set(SNOMED_CD))),
                    "MI": None, "HYP": None, "STTC": None}
    return {}


def list_records(root: Path, labels_csv: Path | None = None) -> tuple[list[RecordRef], list[tuple[str, str]]]:
    """Every record under root with its labels; problems as (record id, reason)."""
    root = Path(root)
    problems: list[tuple[str, str]] = []
    if not root.is_dir():
        raise FileNotFoundError(f"WFDB folder not found: {root}")
    if any((root / t).is_file() for t in PTBXL_TABLES) and labels_csv is None:
        return _ptbxl_refs(root, problems), problems
    table = {}
    if labels_csv is not None:
        df, dupes = read_label_table(labels_csv)
        problems += [(where, f"{kind}: {detail}") for kind, where, detail in dupes]
        table = {rec["id"]: {k: rec[k] for k in LABELS} for rec in df.to_dict("records")}
    refs = []
    for header in sorted(root.rglob("*.hea")):
        rid = header.stem
        labels = table.get(rid) if table else _dx_labels(header)
        if table and labels is None:
            problems.append((rid, f"no row in {labels_csv}; labels unknown"))
        refs.append(RecordRef(rid, header.with_suffix(""), labels or {k: None for k in LABELS}))
    if not refs:
        raise FileNotFoundError(f"no WFDB header (.hea) under {root}")
    return refs, problems


def load_signals(ref: RecordRef, fs: int = 500, duration: float = 10.0) -> np.ndarray:
    """(12, fs*duration) float32 mV in the standard lead order; raises RecordError naming the problem."""
    import wfdb
    from scipy.signal import resample_poly

    try:
        rec = wfdb.rdrecord(str(ref.path))
    except Exception as exc:  # wfdb raises many types for broken headers and signal files
        raise RecordError(f"unreadable: {type(exc).__name__}: {exc}") from None
    names = [_ALIASES.get(str(n).strip().upper()) for n in rec.sig_name]
    missing = [lead for lead in LEADS if lead not in names]
    if missing:
        raise RecordError(f"missing leads {missing} (has {rec.sig_name})")
    sig = rec.p_signal[:, [names.index(lead) for lead in LEADS]].T.astype(np.float64)
    units = [str(u).lower() for u in rec.units]
    scale = np.array([1e-3 if u in ("uv", "µv") else 1.0 for u in (units[names.index(lead)] for lead in LEADS)])
    sig *= scale[:, None]
    if np.isnan(sig).any():
        bad = [LEADS[i] for i in np.flatnonzero(np.isnan(sig).any(1))]
        raise RecordError(f"NaN samples in leads {bad}")
    if int(rec.fs) != fs:
        sig = resample_poly(sig, fs, int(rec.fs), axis=1)
    n = int(round(fs * duration))
    if sig.shape[1] < fs * 2.5:
        raise RecordError(f"only {sig.shape[1] / fs:.1f} s of signal; at least 2.5 s are needed")
    out = np.full((12, n), np.nan, np.float32)  # shorter records leave the end of the page empty
    out[:, : min(n, sig.shape[1])] = sig[:, :n]
    return out
