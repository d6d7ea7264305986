"""Digitised leads as WFDB records (any signal tool reads them), and their accuracy against the true signals.

The accuracy is the PhysioNet Challenge 2024's per lead: the signal-to-noise ratio (dB) and Pearson's correlation,
over the seconds the page shows the lead. As there, a small shift in time (up to MAX_SHIFT samples, the one that
correlates best) and the vertical offset are forgiven: a picture fixes neither the record's first instant to the
sample nor its baseline (each panel's median is taken from both, as the digitiser sets it to 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.digitise.trace import FS, Digitised
from utils.synth.waveform import LEADS

MAX_SHIFT = 5  # samples at FS (50 ms)


def write_record(d: Digitised, name: str, folder: Path, comments: list[str] | None = None) -> Path:
    """The twelve leads as a WFDB record (<folder>/<name>.hea/.dat, 16-bit, 1 uV steps; NaN where the page shows
    nothing of a lead is WFDB's missing value). The layout, scale and flags go in the header's comments."""
    import wfdb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    notes = [f"digitised: {d.note()}", f"px_per_mm: {d.px_per_mm:.3f}", f"px_per_mv: {d.px_per_mv:.2f}",
             *(comments or [])]
    signals = np.asarray(d.signals, np.float64).T
    wfdb.wrsamp(name, fs=FS, units=["mV"] * len(LEADS), sig_name=list(LEADS), p_signal=signals, fmt=["16"] * len(LEADS),
                adc_gain=[1000.0] * len(LEADS), baseline=[0] * len(LEADS), comments=notes, write_dir=str(folder))
    return folder / f"{name}.hea"


def read_record(path: Path) -> np.ndarray:
    """(12, n) mV in the standard lead order from a record written by write_record (NaN where missing)."""
    import wfdb

    rec = wfdb.rdrecord(str(Path(path).with_suffix("")))
    order = [rec.sig_name.index(lead) for lead in LEADS]
    return rec.p_signal[:, order].T.astype(np.float32)


def lead_accuracy(read: np.ndarray, true: np.ndarray, max_shift: int = MAX_SHIFT) -> list[dict]:
    """Per lead: samples shown, Pearson r and SNR (dB) of `read` (12, n; NaN where not shown) against `true`
    (12, n, at FS), each panel's median taken from both, at the shift (|s| <= max_shift) that correlates best."""
    out = []
    for i, lead in enumerate(LEADS):
        shown = np.flatnonzero(np.isfinite(read[i]))
        row = {"lead": lead, "samples": len(shown), "r": np.nan, "snr_db": np.nan, "shift": 0}
        if len(shown) < 2 * max_shift + 10:
            out.append(row)
            continue
        best = None
        for s in range(-max_shift, max_shift + 1):
            idx = shown[(shown + s >= 0) & (shown + s < true.shape[1])]
            a, b = read[i, idx].astype(np.float64), true[i, idx + s].astype(np.float64)
            a, b = a - _panel_medians(a, idx), b - _panel_medians(b, idx)
            if np.std(a) < 1e-9 or np.std(b) < 1e-9:
                continue
            r = float(np.corrcoef(a, b)[0, 1])
            if best is None or r > best[0]:
                noise = np.sum((a - b) ** 2)
                best = (r, 10 * np.log10(np.sum(b ** 2) / max(noise, 1e-12)), s)
        if best is not None:
            row.update(r=best[0], snr_db=best[1], shift=best[2])
        out.append(row)
    return out


def _panel_medians(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Each stretch of consecutive samples (a panel) minus nothing but its own median, returned per sample."""
    cuts = np.flatnonzero(np.diff(idx) > 1) + 1
    med = np.empty_like(values)
    for part in np.split(np.arange(len(idx)), cuts):
        med[part] = np.median(values[part])
    return med
