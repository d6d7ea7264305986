"""The digitiser: a picture of a printed 12-lead ECG -> twelve leads in mV at 100 Hz, and where it read them.

It follows a mask of the traces. The classical one: the traces are the one thing on an ECG printout that is much
darker than the paper around it, in long pieces, whatever the grid's colour (the ink mask of utils/preprocess/ink.py,
the same that step 02 crops to); a coloured or grey grid is bright in the pixel's largest channel, and dots, letters
and speckle are short pieces. Or the trace segmenter's (utils/digitise/segment.py, `segmenter=`), learned from the
synthesizer's own trace points, which leaves grid lines, separators and text out where the ink mask keeps some. What
remains is geometry a printout fixes: 25 mm/s, 10 mm/mV, 10 s across, a layout of rows, and a calibration pulse
(1 mV, 10 mm high, 5 mm wide) at the left of most rows.

The steps, on the picture at 1600 px on its long side, levelled (a photo's small tilt undone):
1. **Rows**: the peaks of the ink's row profile (each band ends half way to the next); a band the ink runs through
   for at least half the page's width is a row of traces. The number of rows gives the layout: 3 or 4 -> 3x4 (with
   a rhythm strip), 6 or 7 -> 6x2, 12 -> 12x1; over 3 rows of another count, the least inked rows (a report's
   footer, a ruled line) are left out until the count is one of these; fewer than 3 is a layout not found.
2. **Scale**: each row's ink spans its 10 s (250 mm), and 7 mm more when a calibration pulse opens it; the pulse is
   a flat top 7-13 mm above the row's baseline, 3-7.5 mm wide, in its first 10 mm. Pixels per mm come from the
   span (per row, so a photo's perspective is followed row by row); pixels per mV from the pulse's height where
   there is one (10 mm), else from 10 mm at the row's scale.
3. **Trace**: down each column of a row's band, the run of ink nearest the trace's last position; its far end from
   the baseline where the run is long (a QRS's steep stroke: its peak is kept), its middle otherwise. Columns with
   no ink are filled in between; a row's baseline per panel is the median of its trace.
4. **Leads**: the panels by the layout (3x4: 2.5 s each, in the standard order); the rhythm strip's lead is the one
   whose panel matches the strip's same 2.5 s best (II on most pages; V1 or III on some), else II.

Every lead is 10 s at 100 Hz, NaN outside the seconds the page shows it (a 3x4 page shows each lead for 2.5 s, its
rhythm lead for 10). A lead that comes out flat or clipped at its band's edge is flagged; a picture whose rows or
layout cannot be found gets its reason, never an exception. Measured by `python -m utils.bench.digitise` (README).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from utils.digitise.segment import mask_of
from utils.preprocess.ink import ink_mask, is_trace_row, level, trace_rows
from utils.preprocess.orient import upright
from utils.preprocess.roi import classical_detect, quad_is_plausible, rectify
from utils.preprocess.seen import Seen
from utils.synth.render import LAYOUTS
from utils.synth.waveform import LEADS

FS = 100                      # Hz, the signals' rate
SECONDS = 10.0
SPAN_MM, PULSE_MM = 250.0, 7.0  # a row's 10 s at 25 mm/s; the pulse's lead-in before the traces
MM_PER_S, MM_PER_MV = 25.0, 10.0
ROWS_TO_LAYOUT = {3: ("3x4", False), 4: ("3x4", True), 6: ("6x2", False), 7: ("6x2", True), 12: ("12x1", False)}


@dataclass
class Digitised:
    """One picture read back. signals (12, 1000) mV at FS, NaN where the page shows nothing of a lead; paths: per
    panel (lead, x, y, samples) in the picture's pixels, for drawing, with the samples of the lead they show;
    problem: why nothing was read ('' when read)."""
    signals: np.ndarray
    layout: str = ""
    rhythm_lead: str = ""
    rectified: bool = False
    px_per_mm: float = float("nan")
    px_per_mv: float = float("nan")
    pulses: int = 0
    tilt: float = 0.0
    problem: str = ""
    flags: list[str] = field(default_factory=list)
    paths: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def read(self) -> bool:
        return not self.problem

    @property
    def agreement(self) -> float:
        """How well the leads read agree with the laws that tie them, with no truth needed (NaN when unread):
        the mean of corr(II, I + III) and corr(-aVR, aVL + aVF) over the seconds all of them are shown."""
        return agreement(self.signals) if self.read else float("nan")

    def note(self) -> str:
        """One line for a predict row: the layout read, or why not, and the flagged leads."""
        if self.problem:
            return f"not digitised: {self.problem}"
        return f"{self.layout}" + (f" + {self.rhythm_lead} rhythm strip" if self.rhythm_lead else "") + \
            (f"; {'; '.join(self.flags)}" if self.flags else "")


def blank() -> np.ndarray:
    return np.full((len(LEADS), int(FS * SECONDS)), np.nan, np.float32)


def follow(band: np.ndarray, start: float, long_run: int) -> np.ndarray:
    """The trace's row in each column of a band (NaN where a column has no ink): the run of ink nearest the last
    position; its middle, or where the run is long (a steep stroke) and the trace turns back in it (both neighbours'
    runs lie nearer the baseline `start`), its far end, so a QRS's peak is kept and its strokes are not widened."""
    width = band.shape[1]
    lo, hi = np.full(width, np.nan), np.full(width, np.nan)
    # every run of ink in every column at once: where a column's ink begins and ends, in column order
    edges = np.diff(np.pad(band.astype(np.int8), ((1, 1), (0, 0))).T, axis=1)
    column, first = np.nonzero(edges == 1)
    last_row = np.nonzero(edges == -1)[1] - 1
    middles = ((first + last_row) / 2).tolist()
    bounds = np.r_[0, np.flatnonzero(np.diff(column)) + 1, len(column)].tolist() if len(column) else [0]
    last = start
    for a, b in zip(bounds[:-1], bounds[1:]):  # one column: the run nearest the last position (the first of equals)
        k = min(range(a, b), key=lambda i: abs(middles[i] - last))
        x = column[a]
        lo[x], hi[x] = first[k], last_row[k]
        last = middles[k]
    mid = (lo + hi) / 2
    away = np.abs(mid - start)
    before, after = np.r_[np.nan, away[:-1]], np.r_[away[1:], np.nan]
    turns = (hi - lo >= long_run) & ~(before > away) & ~(after > away)
    far = np.where(np.abs(lo - start) > np.abs(hi - start), lo, hi)
    return np.where(turns, far, mid)


def span(ys: np.ndarray, gap: int, least: int) -> tuple[int, int]:
    """First and last column of a row's trace: of the stretches of inked columns (gaps shorter than `gap` bridged)
    at least `least` columns long, so a faded or shadowed piece in between does not cut the row short."""
    cols = np.flatnonzero(np.isfinite(ys))
    if len(cols) < 2:
        return 0, 0
    breaks = np.flatnonzero(np.diff(cols) > gap)
    lo, hi = cols[np.r_[0, breaks + 1]], cols[np.r_[breaks, len(cols) - 1]]
    keep = hi - lo >= least
    return (int(lo[keep][0]), int(hi[keep][-1])) if keep.any() else (0, 0)


def pulse_height(ys: np.ndarray, x0: int, px_mm: float) -> float:
    """The calibration pulse's height in px when one opens the row at x0 (NaN when none): a flat top 7-13 mm above
    the row's start, 3-7.5 mm wide, within the first 10 mm."""
    window = ys[x0:x0 + int(10 * px_mm)]
    start = np.nanmedian(ys[x0:x0 + max(2, int(1.0 * px_mm))])
    height = start - window
    if not np.isfinite(height).any():
        return float("nan")
    top = np.nanmax(height)
    if not 7 * px_mm <= top <= 13 * px_mm:
        return float("nan")
    flat = np.isfinite(height) & (height > 0.75 * top)
    width = flat.sum()
    return float(np.median(height[flat])) if 3 * px_mm <= width <= 7.5 * px_mm else float("nan")


def _to_picture(x, y, tilt: float, shape, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if tilt:
        back = cv2.invertAffineTransform(cv2.getRotationMatrix2D((shape[1] / 2, shape[0] / 2), tilt, 1.0))
        x, y = back[0, 0] * x + back[0, 1] * y + back[0, 2], back[1, 0] * x + back[1, 1] * y + back[1, 2]
    return (x / scale).astype(np.float32), (y / scale).astype(np.float32)


def digitise(img: np.ndarray, rectify_sheet: bool = True, min_confidence: float = 0.8, segmenter=None,
             seen: Seen | None = None) -> Digitised:
    """Twelve leads read back from a picture of an ECG printout (BGR, any size, standing upright). A photo's sheet is
    first warped flat (the classical sheet finder's corners, as step 02's seg_rect, when it is sure and the
    quadrilateral plausible): a perspective squeezes time along a row. Over 16 synthetic photos the flat sheet read
    better (median r 0.52 against 0.44); choosing per picture by `agreement` read worse (0.45). The paths are in
    the picture's pixels. With a `segmenter` (utils/digitise/segment.py) its trace mask is followed instead of the
    classical ink mask. `seen`: the picture's shared findings (utils/preprocess/seen.py), whose sheet is not found
    again."""
    if rectify_sheet:
        seen = seen.of(img) if seen is not None else None
        found = seen.sheet() if seen is not None else classical_detect(img)
        if found["corners"] is not None and found["confidence"] >= min_confidence and \
                quad_is_plausible(found["corners"], found["box"])[0]:
            try:
                flat, hom = rectify(img, found["corners"])
            except ValueError:
                flat = None
            if flat is not None:
                out = read_page(flat, segmenter)
                back = np.linalg.inv(hom)
                for k, (name, x, y, samples) in enumerate(out.paths):
                    pts = cv2.perspectiveTransform(np.stack([x, y], 1)[:, None].astype(np.float64), back)[:, 0]
                    out.paths[k] = (name, pts[:, 0].astype(np.float32), pts[:, 1].astype(np.float32), samples)
                out.rectified = True
                return out
    return read_page(img, segmenter)


def digitise_turned(img: np.ndarray, orient: dict, segmenter=None, seen: Seen | None = None) -> tuple[Digitised, int]:
    """The digitiser after the traces' turn (utils/preprocess/orient.py's find_turn): the sure turn undone first;
    when the page as it stands shows too few rows and the traces lean to a turn they are not sure of, that turn is
    tried too. Returns the reading and the turn undone (degrees)."""
    turn = orient["turn_found"] if orient["sure"] else 0
    d = digitise(upright(img, turn) if turn else img, segmenter=segmenter, seen=None if turn else seen)
    if not d.read and "row(s) of traces" in d.problem and not orient["sure"] and orient["turn_found"]:
        guess = orient["turn_found"]
        tried = digitise(upright(img, guess), segmenter=segmenter)
        if tried.read:
            return tried, guess
    return d, turn


def read_page(img: np.ndarray, segmenter=None, mask: np.ndarray | None = None) -> Digitised:
    """Twelve leads read back from a picture of a flat, upright ECG printout: the classical ink mask followed, or the
    `segmenter`'s trace mask (probability >= 0.5), or a given `mask` (bool, the picture at the working size: the
    benchmark's true mask, which tells the reading's losses apart from the mask's)."""
    out = Digitised(blank())
    if mask is not None:
        ink = mask
    elif segmenter is None:
        ink = ink_mask(img, relative=True)
    else:
        ink = mask_of(segmenter, img) >= 0.5
    mask, out.tilt = level(ink)
    scale = mask.shape[1] / img.shape[1]
    columns = np.flatnonzero(mask.any(axis=0))
    if not len(columns):
        out.problem = "no trace ink found"
        return out
    spanned = mask[:, columns[0]:columns[-1] + 1]
    rows = [r for r in trace_rows(mask) if is_trace_row(spanned[r[0]:r[2]])]
    while len(rows) > 3 and len(rows) not in ROWS_TO_LAYOUT:  # a report's footer or a ruled line: the least inked
        rows.pop(int(np.argmin([mask[t:b].sum() for t, _, b in rows])))
    if len(rows) not in ROWS_TO_LAYOUT:
        out.problem = (f"{len(rows)} row(s) of traces found: no known layout has that many "
                       f"(3x4: 3-4, 6x2: 6-7, 12x1: 12)")
        return out
    out.layout, has_rhythm = ROWS_TO_LAYOUT[len(rows)]
    grid = [list(r) for r in LAYOUTS[out.layout]] + ([["rhythm"]] if has_rhythm else [])
    n = int(FS * SECONDS)
    t = np.arange(n) / FS
    panels, mm, mv = {}, [], []
    half = int(np.median(np.diff([r[1] for r in rows])) / 2)  # the first and last bands: no deeper than the rest
    for (top, peak, bottom), names in zip(rows, grid):
        top, bottom = max(top, peak - half), min(bottom, peak + half)
        band = mask[top:bottom]
        thick = max(2, int(np.median(band.sum(axis=0)[band.any(axis=0)])) if band.any() else 2)
        ys = follow(band, peak - top, long_run=3 * thick)
        x0, x1 = span(ys, gap=max(4, mask.shape[1] // 100), least=mask.shape[1] // 50)
        if x1 - x0 < mask.shape[1] * 0.3:
            out.problem = f"the row of traces at {peak / scale:.0f} px is too short to read"
            return out
        px_mm = (x1 - x0) / (SPAN_MM + PULSE_MM / 2)  # a first guess, then with or without the pulse
        pulse = pulse_height(ys, x0, px_mm)
        px_mm = (x1 - x0) / (SPAN_MM + (PULSE_MM if np.isfinite(pulse) else 0.0))
        start = x0 + (PULSE_MM * px_mm if np.isfinite(pulse) else 0.0)
        px_mv = pulse if np.isfinite(pulse) else MM_PER_MV * px_mm
        out.pulses += int(np.isfinite(pulse))
        mm.append(px_mm)
        mv.append(px_mv)
        cols = np.flatnonzero(np.isfinite(ys[x0:x1 + 1])) + x0
        xs = start + t * MM_PER_S * px_mm
        y = np.interp(xs, cols, ys[cols])
        clipped = np.interp(xs, cols, (ys[cols] <= 1) | (ys[cols] >= band.shape[0] - 2))
        each = SECONDS / len(names)
        for c, name in enumerate(names):
            sel = (t >= c * each) & (t < (c + 1) * each)
            part = y[sel]
            panels[name] = (sel, (np.median(part) - part) / px_mv, float(clipped[sel].mean()))
            px, py = _to_picture(xs[sel], y[sel] + top, out.tilt, mask.shape, scale)
            out.paths.append((name, px, py, np.flatnonzero(sel)))
    out.px_per_mm, out.px_per_mv = float(np.median(mm)) / scale, float(np.median(mv)) / scale
    for name, (sel, values, clip) in panels.items():
        if name in LEADS:
            out.signals[LEADS.index(name), sel] = values
    if "rhythm" in panels:
        out.rhythm_lead = rhythm_lead(out.signals, panels["rhythm"][1])
        out.signals[LEADS.index(out.rhythm_lead)] = panels["rhythm"][1]
        out.paths = [(out.rhythm_lead + "_rhythm" if p[0] == "rhythm" else p[0], *p[1:]) for p in out.paths]
    out.flags = flags(out.signals, {name: clip for name, (_, _, clip) in panels.items()})
    return out


def agreement(signals: np.ndarray) -> float:
    """Einthoven's and Goldberger's laws as a check of a reading: II = I + III and -aVR = aVL + aVF hold on every
    ECG, so the leads read from different places of the page must agree (NaN where no seconds show all of them)."""
    idx = {name: i for i, name in enumerate(LEADS)}
    pairs = [(signals[idx["II"]], signals[idx["I"]] + signals[idx["III"]]),
             (-signals[idx["aVR"]], signals[idx["aVL"]] + signals[idx["aVF"]])]
    rs = []
    for a, b in pairs:
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() >= 20 and np.std(a[both]) > 1e-6 and np.std(b[both]) > 1e-6:
            rs.append(float(np.corrcoef(a[both], b[both])[0, 1]))
    return float(np.mean(rs)) if rs else float("nan")


def rhythm_lead(signals: np.ndarray, strip: np.ndarray, least: float = 0.6, margin: float = 0.15) -> str:
    """The rhythm strip's lead: II (the common one) unless another lead's panel matches the strip over the same
    seconds clearly better (by `margin`, and at least `least` in correlation)."""
    r = np.full(len(LEADS), -1.0)
    for i in range(len(LEADS)):
        shown = np.isfinite(signals[i])
        if shown.sum() >= 10 and np.std(signals[i, shown]) > 1e-6 and np.std(strip[shown]) > 1e-6:
            r[i] = np.corrcoef(signals[i, shown], strip[shown])[0, 1]
    best = int(np.argmax(r))
    return LEADS[best] if r[best] >= least and r[best] > r[LEADS.index("II")] + margin else "II"


def flags(signals: np.ndarray, clipped: dict[str, float], flat_mv: float = 0.02, clip_share: float = 0.02) -> list[str]:
    """Leads that came out flat (spread under flat_mv) or touching their band's edge (over clip_share of samples)."""
    out = []
    for i, name in enumerate(LEADS):
        shown = signals[i][np.isfinite(signals[i])]
        if shown.size and np.std(shown) < flat_mv:
            out.append(f"{name} flat")
    out += [f"{name} clipped" for name, share in clipped.items() if share > clip_share and name in LEADS]
    return out
