"""The traces as drawn: where each lead's line lies in a synthesized picture's own pixels, after every transform.

The renderer draws each panel (a lead's 2.5 s, or the rhythm strip's 10 s) as a polyline through the signal's samples,
in page pixels; the picture's forward map (utils/synth/photo.py: perspective, paper curl, a crumpled sheet's relief;
utils/synth/scan.py: the scanner's turn and shift) takes those points into the picture. So the true trace of every
picture is known at the signal's own rate, to a fraction of a pixel, whatever the page's look: the target a trace
segmentation network learns, and what the digitiser's reading is held against.

Stored compactly (`save`, `load`): one .npz per picture, the points in 1/8 px steps as uint16 (pictures up to
8,191 px a side; NaN samples of a record with gaps as 65535), the panels' names, offsets and first samples, the
signal's rate and the stroke's width in picture pixels. A mask is drawn from them on demand at any scale
(`column_mask`), never stored as a picture.

`column_mask` is the mask as the 2025-26 Kaggle digitisation entries drew theirs: per column, the trace's height
split over the two pixel rows it falls between by its fraction, one channel per row of the page, so the column's
weighted mean (`read_columns`) gives the height back to the sub-pixel. `read_back` turns such a reading into leads
in mV at 100 Hz with each panel's true frame (where 0 and 1 mV lie in the picture): what a perfect segmenter would let a
digitiser read, the ceiling of any learned reading (`python -m utils.bench.digitise` prints it beside each reading).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.atomic import atomic_write_bytes
from utils.synth.waveform import LEADS

STEP = 8  # fixed-point steps per pixel
FRAME_EVERY = 10  # a panel's frame (0 mV and 1 mV) is kept under every 10th sample
MISSING = np.iinfo(np.uint16).max
FS_OUT, SECONDS = 100, 10.0


class TraceError(ValueError):
    """A trace file that cannot be read, or points that cannot be stored."""


@dataclass
class Traces:
    """A picture's drawn traces: per panel (its key: a lead, '<lead>_rhythm', or a row's calibration pulse
    'pulse<row>'), the points (n, 2) in picture px at the signal's rate `fs` (a pulse: its six corners), the index of
    its first sample in the record (a pulse: -1), the row of the page it sits in, and its frame: where 0 mV and 1 mV
    lie in the picture under every FRAME_EVERY-th sample (the paper's own vertical, carried through the same
    transforms), so heights read off the picture turn into mV as the page meant them."""
    panels: dict[str, np.ndarray]
    starts: dict[str, int]
    rows: dict[str, int]
    zero: dict[str, np.ndarray]
    one: dict[str, np.ndarray]
    fs: int
    width_px: float

    def scaled(self, scale: float) -> "Traces":
        """The same traces in a picture resized by `scale` (pixel centres kept: (p + 0.5) * scale - 0.5)."""
        def move(d):
            return {k: (p + 0.5) * scale - 0.5 for k, p in d.items()}

        return Traces(move(self.panels), dict(self.starts), dict(self.rows), move(self.zero), move(self.one),
                      self.fs, self.width_px * scale)

    @property
    def n_rows(self) -> int:
        return max(self.rows.values()) + 1 if self.rows else 0


def placed(drawn: list[dict], forward, fs: int, stroke_px: float) -> Traces:
    """The renderer's panels (page px; `render_page`'s third result) through the picture's forward map. The stroke's
    width in the picture is the page's times the map's median local scale along the traces."""
    panels, starts, rows, zero, one, scales = {}, {}, {}, {}, {}, []
    for d in drawn:
        pts = np.stack([d["x"], d["y"]], 1).astype(np.float64)
        ok = np.isfinite(pts).all(1)
        out = np.full(pts.shape, np.nan)
        if ok.any():
            out[ok] = forward(pts[ok])
            every = max(1, ok.sum() // 20)
            step = forward(pts[ok][::every] + [1.0, 0.0]) - out[ok][::every]
            scales += list(np.hypot(step[:, 0], step[:, 1]))
        under = np.stack([d["x"][::FRAME_EVERY], np.full(len(d["x"][::FRAME_EVERY]), d["base_y"])], 1)
        key = d["key"]
        panels[key], starts[key], rows[key] = out, int(d["start"]), int(d["row"])
        zero[key], one[key] = forward(under), forward(under - [0.0, d["px_per_mv"]])
    return Traces(panels, starts, rows, zero, one, fs, float(stroke_px * (np.median(scales) if scales else 1.0)))


def _fixed(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), np.round(np.nan_to_num(a) * STEP), MISSING).astype(np.uint16)


def save(traces: Traces, path: Path) -> None:
    """The traces as one compressed .npz, written atomically; points outside what it stores raise TraceError."""
    keys = list(traces.panels)
    parts = {name: [getattr(traces, name)[k] for k in keys] for name in ("panels", "zero", "one")}
    bad = sorted({k for name, arrays in parts.items() for k, a in zip(keys, arrays)
                  if np.nanmax(a, initial=0) * STEP >= MISSING or np.nanmin(a, initial=0) < -0.5 / STEP})
    if bad:
        raise TraceError(f"{path}: panels {bad} lie outside 0..{(MISSING - 1) // STEP} px, which this file stores")
    arrays = {name: _fixed(np.concatenate(a) if a else np.zeros((0, 2))) for name, a in parts.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, keys=np.array(keys), offsets=np.cumsum([0] + [len(a) for a in parts["panels"]]),
                        frame_offsets=np.cumsum([0] + [len(a) for a in parts["zero"]]),
                        starts=np.array([traces.starts[k] for k in keys]),
                        rows=np.array([traces.rows[k] for k in keys]),
                        fs=traces.fs, width_px=traces.width_px)
    atomic_write_bytes(Path(path), buf.getvalue())


def load(path: Path) -> Traces:
    """Traces written by `save`; a damaged or foreign file raises TraceError naming it."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            arrays = {name: np.where(z[name] == MISSING, np.nan, z[name] / STEP) for name in ("panels", "zero", "one")}
            keys, off, foff = [str(k) for k in z["keys"]], z["offsets"], z["frame_offsets"]
            starts, rows, fs, width = z["starts"], z["rows"], int(z["fs"]), float(z["width_px"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise TraceError(f"{path}: not a trace file ({type(exc).__name__}: {exc})") from exc

    def split(a, o):
        return {k: a[o[i]:o[i + 1]] for i, k in enumerate(keys)}

    return Traces(split(arrays["panels"], off), {k: int(starts[i]) for i, k in enumerate(keys)},
                  {k: int(rows[i]) for i, k in enumerate(keys)}, split(arrays["zero"], foff),
                  split(arrays["one"], foff), fs, width)


def column_heights(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The panel's height at each pixel column it crosses: (columns, y). Where a steep stroke crosses a column more
    than once (a QRS on a turned page), the first crossing, as a per-column mask keeps one height."""
    p = points[np.isfinite(points).all(1)]
    if len(p) < 2:
        return np.zeros(0, int), np.zeros(0)
    x = np.maximum.accumulate(p[:, 0])
    cols = np.arange(int(np.ceil(x[0])), int(np.floor(x[-1])) + 1)
    first = np.searchsorted(x, cols, side="left").clip(1, len(x) - 1)
    x0, x1, y0, y1 = x[first - 1], x[first], p[first - 1, 1], p[first, 1]
    f = np.where(x1 > x0, (cols - x0) / np.where(x1 > x0, x1 - x0, 1), 1.0)
    return cols, y0 + f * (y1 - y0)


def column_mask(traces: Traces, shape: tuple[int, int]) -> np.ndarray:
    """(rows of the page, h, w) float32: per channel (a row of the page), each column's trace height split over the
    two pixel rows it lies between by its fraction; a column's weighted mean gives the height back."""
    h, w = shape[:2]
    mask = np.zeros((traces.n_rows, h, w), np.float32)
    for key, pts in traces.panels.items():
        cols, y = column_heights(pts)
        keep = (cols >= 0) & (cols < w) & (y >= 0) & (y <= h - 1)
        cols, y = cols[keep], y[keep]
        lo = np.floor(y).astype(int)
        frac = (y - lo).astype(np.float32)
        ch = traces.rows[key]
        mask[ch, lo, cols] += 1 - frac
        mask[ch, np.minimum(lo + 1, h - 1), cols] += np.where(lo + 1 < h, frac, 0)
    return mask


def read_columns(mask: np.ndarray, least: float = 0.05) -> np.ndarray:
    """(channels, w): each column's weighted mean height in each channel; NaN where the channel holds under `least`."""
    weight = mask.sum(1)
    ys = np.arange(mask.shape[1], dtype=np.float64)[None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (mask * ys).sum(1) / weight
    return np.where(weight >= least, mean, np.nan)


def read_back(traces: Traces, heights: np.ndarray) -> np.ndarray:
    """Leads (12, 1000) in mV at 100 Hz from per-column heights (`read_columns`), each panel read over its own
    columns, its time from where its columns lie along the panel, its mV from the panel's true frame (0 and 1 mV in
    the picture): the reading a perfect segmenter and a perfect grid reading allow, NaN where the page shows nothing
    of a lead."""
    out = np.full((len(LEADS), int(FS_OUT * SECONDS)), np.nan)
    order = sorted((k for k in traces.panels if traces.starts[k] >= 0),  # calibration pulses have no samples
                   key=lambda k: k.endswith("_rhythm"))  # a rhythm strip's 10 s over its panel
    for key in order:
        pts = traces.panels[key]
        lead = LEADS.index(key.removesuffix("_rhythm"))
        ok = np.isfinite(pts).all(1)
        if ok.sum() < 4:
            continue
        n0 = traces.starts[key]
        t = (n0 + np.flatnonzero(ok)) / traces.fs
        x = np.maximum.accumulate(pts[ok, 0])
        cols, _ = column_heights(pts)
        cols = cols[(cols >= 0) & (cols < heights.shape[1])]
        y = heights[traces.rows[key], cols]
        got = np.isfinite(y)
        if got.sum() < 4:
            continue
        tc = np.interp(cols[got], x, t)
        grid = np.arange(np.ceil(t[0] * FS_OUT), np.floor(t[-1] * FS_OUT) + 1).astype(int)
        grid = grid[(grid >= 0) & (grid < out.shape[1])]
        y_t = np.interp(grid / FS_OUT, tc, y[got])
        zero, one = traces.zero[key], traces.one[key]
        x_t = np.interp(grid / FS_OUT, t, x)
        base = np.interp(x_t, zero[:, 0], zero[:, 1])
        out[lead, grid] = (base - y_t) / (base - np.interp(x_t, one[:, 0], one[:, 1]))
    return out


def levelled(traces: Traces) -> Traces:
    """The traces as a perfect rectification leaves them: each panel laid along its own baseline (x: the distance
    travelled along it, from where it starts in the picture; y: its height above it along the paper's vertical, at
    the picture's own local scale). Read per column, this is the reading of a digitiser that undid the sheet's turn,
    perspective and bends exactly; read in the picture as drawn, columns cut a turned page's strokes aslant."""
    panels, zero, one = {}, {}, {}
    for key, pts in traces.panels.items():
        z, o = traces.zero[key], traces.one[key]
        idx = np.arange(len(pts)) / FRAME_EVERY
        at = np.arange(len(z))
        zt = np.stack([np.interp(idx, at, z[:, i]) for i in (0, 1)], 1)
        ut = np.stack([np.interp(idx, at, o[:, i] - z[:, i]) for i in (0, 1)], 1)
        unit = np.hypot(ut[:, 0], ut[:, 1])
        up = ut / unit[:, None]
        along = np.r_[0.0, np.cumsum(np.hypot(*np.diff(zt, axis=0).T))] + z[0, 0]
        height = ((pts - zt) * up).sum(1)
        y0 = z[0, 1]
        panels[key] = np.stack([along, y0 - height], 1)
        zero[key] = np.stack([along[::FRAME_EVERY], np.full(len(z), y0)], 1)
        one[key] = np.stack([along[::FRAME_EVERY], y0 - unit[::FRAME_EVERY]], 1)
    return Traces(panels, dict(traces.starts), dict(traces.rows), zero, one, traces.fs, traces.width_px)


def extent(traces: Traces) -> tuple[int, int]:
    """(h, w) that holds every panel's points."""
    pts = np.concatenate(list(traces.panels.values()))
    top = np.nanmax(pts, axis=0)
    return int(np.ceil(top[1])) + 2, int(np.ceil(top[0])) + 2
