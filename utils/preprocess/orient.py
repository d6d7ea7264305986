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

The ink is what is much darker than its neighbourhood (a morphological closing gives the paper's own shade, so a
coloured grid, a shadow or a tinted scan stays out), keeping pieces that are long (over 1/50 of the page's long
side): traces, not grid dots, speckle or letters. A photo taken a little askew is levelled first (the tilt within
12 degrees that makes the rows band most sharply), and only the columns the ink spans are read, wherever the page
lies in the picture. Measured by `python -m utils.bench.page` (README).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import find_peaks

WORK_SIDE = 1600          # the long side the page is read at
AFTER = (0.12, 0.45)      # the window after (and, mirrored, before) each QRS, in parts of the RR interval


def upright(img: np.ndarray, turn: int) -> np.ndarray:
    """The picture turned back by `turn` degrees (counter-clockwise, as np.rot90(upright_page, turn // 90) turned
    it), so the page stands upright."""
    return np.ascontiguousarray(np.rot90(img, -(turn // 90) % 4))


def ink_mask(img: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """The traces' ink at `side` px on the long side: much darker than the paper around it, in long pieces."""
    h, w = img.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    value = (small.max(axis=2) if small.ndim == 3 else small).astype(np.float32)  # a coloured grid is bright here
    paper = cv2.morphologyEx(value, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    ink = paper - value
    mask = (ink > max(30.0, float(np.percentile(ink, 97)))).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    long = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) >= side // 50
    long[0] = False  # the background
    return long[labels]


def smooth(profile: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(profile.astype(np.float64)[:, None], (1, 0), sigmaX=0, sigmaY=sigma).ravel()


def banding(mask: np.ndarray) -> tuple[float, float]:
    """How strongly the ink gathers in rows, and in columns (the spread of the smoothed profile over its mean)."""
    def strength(m):
        p = smooth(m.sum(axis=1), max(2.0, m.shape[0] / 150))
        return float(p.std() / (p.mean() + 1e-6))
    return strength(mask), strength(mask.T)


def level(mask: np.ndarray, max_tilt: float = 12.0) -> tuple[np.ndarray, float]:
    """The mask turned by the small tilt (within max_tilt degrees) that makes its rows of ink band most sharply, as a
    photo taken a little askew needs, and that tilt."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 100:
        return mask, 0.0
    height = mask.shape[0]

    def sharpness(angle):
        shifted = ys - (xs - xs.mean()) * np.tan(np.radians(angle))
        p = smooth(np.bincount(np.clip(shifted, 0, height - 1).astype(int), minlength=height), max(2.0, height / 150))
        return p.std() / (p.mean() + 1e-6)

    angles = np.arange(-max_tilt, max_tilt + 0.01, 1.0)
    best = float(angles[int(np.argmax([sharpness(a) for a in angles]))])
    if best == 0.0:
        return mask, 0.0
    turn = cv2.getRotationMatrix2D((mask.shape[1] / 2, height / 2), best, 1.0)
    return cv2.warpAffine(mask.astype(np.uint8), turn, (mask.shape[1], height), flags=cv2.INTER_NEAREST) > 0, best


def trace_rows(mask: np.ndarray) -> list[tuple[int, int]]:
    """The bands of rows that each hold one row of traces: around the peaks of the ink's row profile."""
    height = mask.shape[0]
    p = smooth(mask.sum(axis=1), max(2.0, height / 150))
    if p.max() <= 0:
        return []
    peaks, _ = find_peaks(p, distance=max(3, height // 14), prominence=p.max() * 0.15)
    bounds = [0] + [(a + b) // 2 for a, b in zip(peaks[:-1], peaks[1:])] + [height]
    return list(zip(bounds[:-1], bounds[1:]))


def beat_ratios(mask: np.ndarray) -> np.ndarray:
    """For every beat found on a horizontal page: log(deflection after the QRS / deflection before it)."""
    columns = np.flatnonzero(mask.any(axis=0))
    if not len(columns):
        return np.array([])
    mask = mask[:, columns[0]:columns[-1] + 1]  # the page's traces, wherever the page lies in the picture
    width = mask.shape[1]
    x = np.arange(width)
    out = []
    for top, bottom in trace_rows(mask):
        band = mask[top:bottom]
        count = band.sum(axis=0)
        inked = count > 0
        if inked.mean() < 0.5:  # not a row of traces (a header, a footer, a label)
            continue
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
    return np.array(out)


def find_turn(img: np.ndarray, min_evidence: float) -> dict:
    """The quarter turn the page shows (0, 90, 180, 270, counter-clockwise as in `upright`), the evidence for its
    direction (the t statistic of the beats' log ratios; its size), the beats it rests on, the axis ratio (the
    stronger banding over the weaker), and whether the rule is sure (evidence at least `min_evidence`)."""
    mask = ink_mask(img)
    rows, columns = banding(mask)
    sideways = columns > rows
    ratios = beat_ratios(level(np.rot90(mask, -1) if sideways else mask)[0])
    if len(ratios) >= 3:
        t = float(ratios.mean() / (ratios.std(ddof=1) / np.sqrt(len(ratios)) + 1e-9))
    else:
        t = 0.0
    turn = (90 if sideways else 0) + (180 if t < 0 else 0)
    return {"turn_found": turn, "turn_evidence": round(abs(t), 2), "beats": int(len(ratios)),
            "axis_ratio": round(max(rows, columns) / (min(rows, columns) + 1e-9), 2),
            "sure": bool(abs(t) >= min_evidence)}
