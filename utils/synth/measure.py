"""Simple ECG measurements from 12-lead signals alone (real or simulated), for checks against reality.

R peaks on the spatial QRS energy, a median beat per lead, then intervals and amplitudes from it. Deliberately
plain: the same code measures PTB-XL records and simulated ones, so their distributions can be compared.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

from utils.synth.waveform import LEADS

L = {name: i for i, name in enumerate(LEADS)}
FEATURES = ("hr", "rr_cv", "rr_rmssd", "qrs_ms", "pr_ms", "qt_ms", "p_amp_II", "q_depth_max", "sokolow_mv",
            "cornell_mv", "r_amp_II", "r_amp_V5", "s_amp_V1", "st_max_mv", "st_min_mv", "t_amp_II", "t_amp_V5",
            "t_min_mv", "qrs_axis_deg")
# per lead, from the same median beat: ST level at J+60 ms, T amplitude (signed: its polarity), R and S amplitudes
LEAD_FEATURES = tuple(f"{kind}_{lead}" for kind in ("st", "t", "r", "s") for lead in LEADS)


def _r_peaks(sig: np.ndarray, fs: int) -> np.ndarray:
    sos = butter(2, [5, 30], "bandpass", fs=fs, output="sos")
    energy = np.sqrt((np.diff(sosfiltfilt(sos, np.nan_to_num(sig), axis=1), axis=1) ** 2).sum(0))
    peaks, _ = find_peaks(energy, distance=int(0.28 * fs), height=0.35 * np.percentile(energy, 99))
    refined = []
    for p in peaks:  # move to the largest absolute deflection nearby in lead II or V5
        lo, hi = max(0, p - int(0.05 * fs)), min(sig.shape[1], p + int(0.05 * fs))
        seg = np.abs(sig[[L["II"], L["V5"]], lo:hi]).sum(0)
        refined.append(lo + int(np.argmax(seg)))
    return np.array(sorted(set(refined)))


def measure(sig: np.ndarray, fs: int = 500) -> dict[str, float]:
    """Measurements of one record (12, n) in mV: FEATURES, then LEAD_FEATURES; NaN where one is not possible."""
    out = dict.fromkeys(FEATURES + LEAD_FEATURES, np.nan)
    sig = sig - np.nanmedian(sig, axis=1, keepdims=True)
    peaks = _r_peaks(sig, fs)
    pre, post = int(0.35 * fs), int(0.6 * fs)
    peaks = peaks[(peaks > pre) & (peaks < sig.shape[1] - post)]
    if len(peaks) < 3:
        return out
    rr = np.diff(peaks) / fs
    out.update(hr=60 / np.median(rr), rr_cv=np.std(rr) / np.mean(rr),
               rr_rmssd=np.sqrt(np.mean(np.diff(rr) ** 2)) / np.mean(rr))
    beats = np.stack([sig[:, p - pre:p + post] for p in peaks])       # (B, 12, W)
    med = np.nanmedian(beats, axis=0)                                # (12, W)
    t = (np.arange(med.shape[1]) - pre) / fs                          # 0 at the R peak
    smooth = sosfiltfilt(butter(2, 40, fs=fs, output="sos"), med, axis=1)
    vel = np.sqrt((np.diff(smooth, axis=1) ** 2).sum(0)) * fs        # spatial velocity, mV/s
    thr = 0.2 * vel[(t[1:] > -0.05) & (t[1:] < 0.05)].max()
    win = np.flatnonzero((t[1:] > -0.1) & (t[1:] < 0.12) & (vel > thr))
    if win.size == 0:
        return out
    on, off = win[0], win[-1] + 1
    out["qrs_ms"] = (off - on) / fs * 1000
    base = np.median(med[:, max(0, on - int(0.04 * fs)):on], axis=1)  # PR segment level
    m = med - base[:, None]
    r = m[:, on:off].max(1)
    r_at = on + m[:, on:off].argmax(1)
    q = np.array([-min(0.0, m[i, on:r_at[i] + 1].min()) if r[i] > 0.3 else 0.0 for i in range(12)])
    out["q_depth_max"] = float(q.max())
    s = -m[:, on:off].min(1)
    out.update(r_amp_II=r[L["II"]], r_amp_V5=r[L["V5"]], s_amp_V1=s[L["V1"]],
               sokolow_mv=s[L["V1"]] + max(r[L["V5"]], r[L["V6"]]), cornell_mv=r[L["aVL"]] + s[L["V3"]])
    j60 = min(off + int(0.06 * fs), m.shape[1] - 1)
    out.update(st_max_mv=m[:, j60].max(), st_min_mv=m[:, j60].min())
    out.update({f"r_{lead}": r[i] for i, lead in enumerate(LEADS)} | {f"s_{lead}": s[i] for i, lead in enumerate(LEADS)}
               | {f"st_{lead}": m[i, j60] for i, lead in enumerate(LEADS)})
    t_win = slice(off + int(0.08 * fs), min(m.shape[1], off + int(0.45 * fs)))
    tw = m[:, t_win]
    t_idx = np.abs(tw).argmax(1)
    t_amp = tw[np.arange(12), t_idx]
    out.update(t_amp_II=t_amp[L["II"]], t_amp_V5=t_amp[L["V5"]], t_min_mv=t_amp.min())
    out.update({f"t_{lead}": t_amp[i] for i, lead in enumerate(LEADS)})
    # T end: where the spatial T magnitude falls below 15% of its peak after the peak
    mag = np.sqrt((tw ** 2).sum(0))
    k = int(mag.argmax())
    below = np.flatnonzero(mag[k:] < 0.15 * mag[k])
    if below.size:
        out["qt_ms"] = (t_win.start + k + below[0] - on) / fs * 1000
    p_win = slice(max(0, on - int(0.28 * fs)), max(1, on - int(0.03 * fs)))
    p_seg = m[L["II"], p_win]
    if p_seg.size:
        kp = int(np.abs(p_seg).argmax())
        out["p_amp_II"] = p_seg[kp]
        start = np.flatnonzero(np.abs(p_seg[:kp]) < 0.25 * abs(p_seg[kp]))
        if abs(p_seg[kp]) > 0.04 and start.size:
            out["pr_ms"] = (on - (p_win.start + start[-1])) / fs * 1000
    area = m[:, on:off].sum(1)
    out["qrs_axis_deg"] = float(np.degrees(np.arctan2(area[L["aVF"]], area[L["I"]])))
    return {k: float(v) for k, v in out.items()}
