"""Paper renderer: the standard printout at 25 mm/s and 10 mm/mV on a 1 mm / 5 mm grid.

Layouts: 3x4 (2.5 s per column) plus a 10 s rhythm strip (lead II, the competition's; V1 or III on some report
pages), 6x2 and 12x1. A report page (utils/synth/report.py) adds a hospital printout's header, footer, dotted or faint
grid and bold column separators. Everything is drawn with OpenCV on a uint8 BGR page; lead boxes (and a report's
header and footer boxes) are returned in page pixels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from utils.synth.report import draw_report

PAGE_MM = (279.4, 215.9)  # US letter, landscape (the common ECG printout)
MM_PER_S, MM_PER_MV = 25.0, 10.0
# (minor, major) grid colours, RGB: red, pink, green, blue, grey, black-and-white, orange
GRIDS = {
    "red": ((246, 190, 190), (228, 110, 110)), "pink": ((250, 214, 226), (236, 150, 178)),
    "green": ((196, 232, 200), (120, 190, 130)), "blue": ((196, 214, 240), (110, 150, 215)),
    "grey": ((214, 214, 214), (160, 160, 160)), "bw": ((225, 225, 225), (120, 120, 120)),
    "orange": ((250, 206, 180), (236, 120, 70)),
}
LAYOUTS = {
    "3x4": [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]],
    "6x2": [["I", "V1"], ["II", "V2"], ["III", "V3"], ["aVR", "V4"], ["aVL", "V5"], ["aVF", "V6"]],
    "12x1": [[lead] for lead in ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")],
}
PULSE = "pulse"  # the drawn panels' key of a row's calibration pulse: "pulse0", "pulse1", ...
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX)


@dataclass
class PageStyle:
    width: int
    height: int
    layout: str = "3x4"
    rhythm_strip: bool = True
    grid: str = "red"
    minor_grid: bool = True
    paper_rgb: tuple = (255, 255, 255)
    trace_rgb: tuple = (0, 0, 0)
    trace_mm: float = 0.25
    font: int = 0
    header_lines: int = 3
    top_mm: float = 32.0
    calibration: bool = True
    bottom_mm: float = 8.0        # below the last row of traces
    rhythm_lead: str = "II"
    grid_dots: bool = False       # the minor grid printed as dots
    separators: bool = False      # bold bars between the lead columns
    report: dict | None = None    # a report page's header and footer (utils/synth/report.py)
    grid_dark: float = 0.0        # 0: the grid's colours as GRIDS has them; 1: its lines nearly as dark as ink

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.grid_dark:  # the pages drawn before it keep their keys
            out.pop("grid_dark")
        return out


def draw_page_style(rng: np.random.Generator, width: int, height: int, layouts=("3x4",)) -> PageStyle:
    paper = tuple(int(v) for v in np.clip(255 - rng.gamma(1.0, 3.0, 3), 225, 255))
    trace = tuple(int(v) for v in (rng.integers(0, 70, 3) if rng.random() < 0.8 else (20, 30, 110)))
    return PageStyle(width=width, height=height, layout=str(rng.choice(list(layouts))),
                     rhythm_strip=bool(rng.random() < 0.95), grid=str(rng.choice(list(GRIDS))),
                     minor_grid=bool(rng.random() < 0.9), paper_rgb=paper, trace_rgb=trace,
                     trace_mm=float(rng.uniform(0.12, 0.4)), font=int(rng.integers(len(FONTS))),
                     header_lines=int(rng.integers(0, 5)), top_mm=float(rng.uniform(22, 40)),
                     calibration=bool(rng.random() < 0.9))


def _bgr(rgb) -> tuple:
    return (int(rgb[2]), int(rgb[1]), int(rgb[0]))


def _fill_with_grid(img: np.ndarray, s: PageStyle, px_mm: float) -> None:
    """Paper colour and grid in two passes: one prepared row broadcast down the page, then the grid rows."""
    minor, major = GRIDS[s.grid]
    if s.grid_dark:  # printed heavier, or photographed in dim light: some real grids are near the ink's darkness
        minor = tuple(v * (1 - 0.45 * s.grid_dark) for v in minor)
        major = tuple(v * (1 - 0.75 * s.grid_dark) for v in major)
    h, w = img.shape[:2]
    thick = max(1, int(round(px_mm * 0.18)))
    row = np.empty((w, 3), np.uint8)
    row[:] = _bgr(s.paper_rgb)
    if s.minor_grid and not s.grid_dots:
        row[np.round(np.arange(0, w, px_mm)).astype(int).clip(0, w - 1)] = _bgr(minor)
    majors_x = np.round(np.arange(0, w, 5 * px_mm)).astype(int)
    row[(majors_x[:, None] + np.arange(thick)).ravel().clip(0, w - 1)] = _bgr(major)
    img[:] = row[None]
    if s.minor_grid and not s.grid_dots:
        img[np.round(np.arange(0, h, px_mm)).astype(int).clip(0, h - 1)] = np.where(
            (row == _bgr(major)).all(1, keepdims=True), row, np.array(_bgr(minor), np.uint8))
    majors_y = np.round(np.arange(0, h, 5 * px_mm)).astype(int)
    img[(majors_y[:, None] + np.arange(thick)).ravel().clip(0, h - 1)] = _bgr(major)
    if s.grid_dots:  # a dot at every millimetre crossing
        ys = np.round(np.arange(0, h, px_mm)).astype(int).clip(0, h - 1)
        xs = np.round(np.arange(0, w, px_mm)).astype(int).clip(0, w - 1)
        img[np.ix_(ys, xs)] = _bgr(minor if s.minor_grid else major)


def _text(img, text, x, y, px_mm, s: PageStyle, size_mm=2.6, color=(0, 0, 0)) -> None:
    scale = size_mm * px_mm / 22.0
    thick = max(1, int(round(scale * 1.6)))
    cv2.putText(img, text, (int(x), int(y)), FONTS[s.font], scale, _bgr(color), thick, cv2.LINE_AA)


def _header(img, s: PageStyle, px_mm, rng: np.random.Generator) -> None:
    """Non-diagnostic header text (ids, dates, settings): no measurement that would give a label away."""
    fields = [f"ID: {rng.integers(10**5, 10**8)}", f"{rng.integers(1, 29):02d}-{rng.integers(1, 13):02d}-"
              f"{rng.integers(1985, 2024)} {rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}",
              "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ"), int(rng.integers(4, 10)))),
              f"Ward {rng.integers(1, 40)}", "25 mm/s  10 mm/mV", f"{rng.choice(['0.05', '0.5'])}-{rng.choice([40, 100, 150])} Hz",
              f"Age: {rng.integers(18, 95)}", str(rng.choice(["Male", "Female", "Sex: -"]))]
    for i in range(s.header_lines):
        line = "   ".join(rng.choice(fields, size=int(rng.integers(1, 4)), replace=False))
        _text(img, line, 12 * px_mm, (7 + 5 * i) * px_mm, px_mm, s, size_mm=rng.uniform(2.4, 3.4))


def stroke_px(s: PageStyle, px_mm: float) -> int:
    """The traces' line width in page pixels."""
    return max(1, int(round(s.trace_mm * px_mm)))


def _trace(img, x_px: np.ndarray, y_px: np.ndarray, s: PageStyle, px_mm: float) -> None:
    ok = np.isfinite(y_px)
    if ok.sum() < 2:
        return
    pts = np.round(np.stack([x_px[ok], y_px[ok]], 1) * 16).astype(np.int32)
    cv2.polylines(img, [pts], False, _bgr(s.trace_rgb), stroke_px(s, px_mm), cv2.LINE_AA, 4)


def render_page(signals: np.ndarray, fs: int, leads, style: PageStyle, rng: np.random.Generator):
    """Draw a 10 s 12-lead record; returns the page (H, W, 3 BGR), the boxes {name: [x0, y0, x1, y1]} of its
    leads (the rhythm strip as '<lead>_rhythm') and, on a report page, of its header and footer, and the panels as
    drawn: per panel its key (as the boxes'), row, first sample, the polyline's x and y in page pixels (one point
    per sample), its baseline's y (0 mV) and pixels per mV (utils/synth/traces.py carries them into the picture);
    a row's calibration pulse is a panel too, keyed PULSE + row, its first sample -1."""
    s = style
    px_mm = s.width / PAGE_MM[0]
    img = np.empty((s.height, s.width, 3), np.uint8)
    drawn = []
    _fill_with_grid(img, s, px_mm)
    boxes = draw_report(img, s, px_mm, FONTS[s.font]) if s.report else {}
    if not s.report:
        _header(img, s, px_mm, rng)
    index = {name: i for i, name in enumerate(leads)}
    rows = [list(r) for r in LAYOUTS[s.layout]]
    if s.rhythm_strip and s.layout != "12x1":
        rows.append([s.rhythm_lead])
    ncol = len(LAYOUTS[s.layout][0])
    col_s = 10.0 / ncol
    left = (PAGE_MM[0] - 250.0) / 2 + 2
    bottom = PAGE_MM[1] - s.bottom_mm
    pitch = (bottom - s.top_mm) / len(rows)
    for r, row in enumerate(rows):
        base_mm = s.top_mm + pitch * (r + 0.55)
        if s.calibration:
            cx = (left - 7) * px_mm
            pulse_x = cx + np.array([0, 1.5, 1.5, 6.5, 6.5, 8]) * px_mm
            pulse_y = base_mm * px_mm - np.array([0, 0, 10, 10, 0, 0]) * px_mm
            _trace(img, pulse_x, pulse_y, s, px_mm)
            drawn.append({"key": f"{PULSE}{r}", "row": r, "start": -1, "x": pulse_x, "y": pulse_y,
                          "base_y": base_mm * px_mm, "px_per_mv": MM_PER_MV * px_mm})
        span = 10.0 if len(row) == 1 else col_s
        for c, name in enumerate(row):
            t0 = c * span
            i0, i1 = int(round(t0 * fs)), int(round((t0 + span) * fs))
            sig = signals[index[name], i0:i1].astype(np.float64)
            x = (left + (t0 + np.arange(sig.size) / fs) * MM_PER_S) * px_mm
            y = (base_mm - sig * MM_PER_MV) * px_mm
            _trace(img, x, y, s, px_mm)
            _text(img, name, x[0] + 1.2 * px_mm, (base_mm - 6.5) * px_mm, px_mm, s, 3.0, s.trace_rgb)
            if c > 0 and s.separators:  # a bold bar across the row between columns
                cv2.line(img, (int(x[0]), int((base_mm - 0.4 * pitch) * px_mm)),
                         (int(x[0]), int((base_mm + 0.4 * pitch) * px_mm)), _bgr(s.trace_rgb),
                         max(2, int(round(0.6 * px_mm))))
            elif c > 0:
                bar = x[0]
                cv2.line(img, (int(bar), int((base_mm - 2) * px_mm)), (int(bar), int((base_mm + 2) * px_mm)),
                         _bgr(s.trace_rgb), stroke_px(s, px_mm))
            finite = y[np.isfinite(y)]
            lo, hi = (finite.min(), finite.max()) if finite.size else (base_mm * px_mm, base_mm * px_mm)
            key = f"{name}_rhythm" if (len(row) == 1 and r == len(rows) - 1 and s.rhythm_strip
                                       and s.layout != "12x1") else name
            boxes[key] = [float(x[0]), float(lo - px_mm), float(x[-1]), float(hi + px_mm)]
            drawn.append({"key": key, "row": r, "start": i0, "x": x, "y": y, "base_y": base_mm * px_mm,
                          "px_per_mv": MM_PER_MV * px_mm})
    return img, boxes, drawn
