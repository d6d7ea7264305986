"""Which way up a page is, read from its traces: a rule, not a network.

Two facts of every 12-lead ECG, whoever printed it:
- **The traces run along the page.** Ink gathers in horizontal rows (one per row of leads) on a page that stands
  or lies upside down, and in vertical columns on a page turned by a quarter. The axis is the direction whose ink
  profile bands more strongly (the spread of the smoothed profile over its mean).
- **Time runs left to right, and the T wave follows the QRS.** After each QRS complex comes the ST segment and the
  T wave (0.1-0.45 of a beat later), the largest deflection of the beat after the QRS; before it lie the P wave
  and the PR segment, smaller (a P wave is about a third of a T wave), or nothing at all in atrial fibrillation.
  On a page turned by 180 degrees time runs right to left, so the T wave comes *before* each QRS. The rule measures,
  beat by beat, the trace's distance from its baseline after the QRS against before it (the same windows, in
  parts of the beat's own RR interval so no paper speed is assumed), as a log ratio; it is a deflection's size, not
  its sign, so an inverted T wave or a lead pointing down (aVR, V1) counts the same. The evidence is the
  t statistic of the log ratios over every beat of every row (positive: upright).

Why a rule: the page reader learnt the turn from the synthesizer's pages and took a cue that real pages do not have
(it called 33 of 52 upright real pages upside down, README). This rule uses no cue of any renderer, only the traces;
it needs no training and takes about 0.13 s a picture on a 2-core CPU (40 pictures).

The ink is the traces' ink of utils/preprocess/ink.py (long dark pieces: traces, not grid dots, speckle or letters).
A photo taken a little askew is levelled first (`level`), and only the columns the ink spans are read, wherever the page
lies in the picture. Measured by `python -m utils.bench.page` (README).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import find_peaks

from utils.preprocess.ink import ink_mask, is_trace_row, level, smooth, trace_rows

AFTER = (0.12, 0.45)      # the window after (and, mirrored, before) each QRS, in parts of the RR interval
# An ECG's traces: at least this many rows of them, and this many beats with a whole window on either side. Set on
# real pictures (`python -m utils.bench.page`, README): the 52 real ECG photos and scans of ecg-image-kit turned four
# ways against library sample photos, plain pages and drawn text, shapes and graph paper.
ECG_ROWS, ECG_BEATS = 2, 10


def upright(img: np.ndarray, turn: int) -> np.ndarray:
    """The picture turned back by `turn` degrees (counter-clockwise, as np.rot90(upright_page, turn // 90) turned
    it), so the page stands upright."""
    return np.ascontiguousarray(np.rot90(img, -(turn // 90) % 4))


def banding(mask: np.ndarray) -> tuple[float, float]:
    """How strongly the ink gathers in rows, and in columns (the spread of the smoothed profile over its mean)."""
    def strength(m):
        p = smooth(m.sum(axis=1), max(2.0, m.shape[0] / 150))
        return float(p.std() / (p.mean() + 1e-6))
    return strength(mask), strength(mask.T)


def beat_ratios(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """For every beat found on a horizontal page: log(deflection after the QRS / deflection before it); and the rows
    of traces the beats were looked for in."""
    columns = np.flatnonzero(mask.any(axis=0))
    if not len(columns):
        return np.array([]), 0
    mask = mask[:, columns[0]:columns[-1] + 1]  # the page's traces, wherever the page lies in the picture
    width = mask.shape[1]
    x = np.arange(width)
    out, found = [], 0
    for top, _, bottom in trace_rows(mask):
        band = mask[top:bottom]
        count = band.sum(axis=0)
        inked = count > 0
        if not is_trace_row(band):  # a header, a footer, a label
            continue
        found += 1
        rows = np.arange(band.shape[0])[:, None]
        centre = np.interp(x, x[inked], ((band * rows).sum(axis=0) / np.maximum(count, 1))[inked])
        first, last = np.argmax(band, axis=0), band.shape[0] - 1 - np.argmax(band[::-1], axis=0)
        extent = smooth(np.where(inked, last - first, 0), 2.0)  # a QRS is a tall stroke
        qrs, _ = find_peaks(extent, distance=max(1, width // 40), height=max(4.0, float(np.percentile(extent, 90))))
        if len(qrs) < 3:
            continue
        rr = float(np.median(np.diff(qrs)))
        deflection = np.abs(centre - median_filter(centre, size=int(rr) | 1, mode="nearest"))
        lo, hi = int(AFTER[0] * rr), int(AFTER[1] * rr)
        if hi <= lo:
            continue
        for q in qrs:
            if q - hi >= 0 and q + hi < width:
                after, before = deflection[q + lo:q + hi].mean(), deflection[q - hi:q - lo].mean()
                out.append(np.log((after + 0.5) / (before + 0.5)))
    return np.array(out), found


def find_turn(img: np.ndarray, min_evidence: float, ink: np.ndarray | None = None) -> dict:
    """The quarter turn the page shows (0, 90, 180, 270, counter-clockwise as in `upright`), the evidence for its
    direction (the t statistic of the beats' log ratios; its size), the beats it rests on and the rows of traces
    they were looked for in, the axis ratio (the stronger banding over the weaker), and whether the rule is sure
    (evidence at least `min_evidence`). `ink`: this picture's ink_mask when it was already found."""
    mask = ink_mask(img) if ink is None else ink
    rows, columns = banding(mask)
    sideways = columns > rows
    ratios, rows_of_traces = beat_ratios(level(np.rot90(mask, -1) if sideways else mask)[0])
    if len(ratios) >= 3:
        t = float(ratios.mean() / (ratios.std(ddof=1) / np.sqrt(len(ratios)) + 1e-9))
    else:
        t = 0.0
    turn = (90 if sideways else 0) + (180 if t < 0 else 0)
    return {"turn_found": turn, "turn_evidence": round(abs(t), 2), "beats": int(len(ratios)), "rows": rows_of_traces,
            "axis_ratio": round(max(rows, columns) / (min(rows, columns) + 1e-9), 2),
            "sure": bool(abs(t) >= min_evidence)}


def shows_traces(found: dict) -> bool:
    """Whether a find_turn reading shows an ECG's traces: ECG_ROWS rows of them and ECG_BEATS beats at least."""
    return found.get("rows", 0) >= ECG_ROWS and found.get("beats", 0) >= ECG_BEATS
