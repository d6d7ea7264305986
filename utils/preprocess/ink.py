"""The traces' ink on a picture of an ECG, and the region the traces fill.

The ink is what is much darker than its neighbourhood (a morphological closing gives the paper's own shade, so a
coloured grid, a shadow or a tinted scan stays out), keeping pieces that are long (over 1/50 of the picture's long
side): traces and calibration pulses, not grid dots, speckle or letters. Its row profile peaks on each row of
traces (the baseline holds most of a trace's ink). Step 02 crops to the region the traces fill (`traces_box`), and
the turn is read from the same ink (utils/preprocess/orient.py).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.signal import find_peaks

WORK_SIDE = 1600          # the long side the page is read at


def brightest_channel(img: np.ndarray) -> np.ndarray:
    """Each pixel's brightest channel (as img.max(axis=2), about ten times faster on a page's pixels)."""
    return cv2.max(cv2.max(img[..., 0], img[..., 1]), img[..., 2])


def ink_mask(img: np.ndarray, side: int = WORK_SIDE, relative: bool = False) -> np.ndarray:
    """The traces' ink at `side` px on the long side: much darker than the paper around it, in long pieces.
    `relative` measures darkness as a share of the paper's own brightness, so ink under a shadow counts alike (the
    digitiser's reading, which must follow a trace through the shadow)."""
    h, w = img.shape[:2]
    scale = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    value = (brightest_channel(small) if small.ndim == 3 else small).astype(np.float32)  # a coloured grid: bright
    paper = cv2.morphologyEx(value, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    ink = paper - value
    if relative:
        ink = ink * (255.0 / np.maximum(paper, 32.0))
    mask = (ink > max(30.0, float(np.percentile(ink, 97)))).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    long = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) >= side // 50
    long[0] = False  # the background
    return long[labels]


def smooth(profile: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(profile.astype(np.float64)[:, None], (1, 0), sigmaX=0, sigmaY=sigma).ravel()


_LEVELLED: list = []  # the last read-only mask levelled, its max_tilt and the result (see level)


def level(mask: np.ndarray, max_tilt: float = 20.0) -> tuple[np.ndarray, float]:
    """The mask turned by the small tilt (within max_tilt degrees) that makes its rows of ink band most sharply, as a
    photo taken a little askew needs, and that tilt. A read-only mask (a picture's shared ink, utils/preprocess/seen.py,
    which the turn and the crop both level) is levelled once: the same array asked again gets the same result,
    read-only too."""
    if not mask.flags.writeable:
        if _LEVELLED and _LEVELLED[0] is mask and _LEVELLED[1] == max_tilt:
            return _LEVELLED[2]
        levelled, tilt = _level(mask, max_tilt)
        levelled.flags.writeable = False
        _LEVELLED[:] = [mask, max_tilt, (levelled, tilt)]
        return levelled, tilt
    return _level(mask, max_tilt)


def _level(mask: np.ndarray, max_tilt: float) -> tuple[np.ndarray, float]:
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


def trace_rows(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """The rows of traces: (top, peak, bottom) of the band around each peak of the ink's row profile (a band ends
    half way to the next peak)."""
    height = mask.shape[0]
    p = smooth(mask.sum(axis=1), max(2.0, height / 150))
    if p.max() <= 0:
        return []
    peaks, _ = find_peaks(p, distance=max(3, height // 14), prominence=p.max() * 0.15)
    bounds = [0] + [(a + b) // 2 for a, b in zip(peaks[:-1], peaks[1:])] + [height]
    return [(int(t), int(k), int(b)) for t, k, b in zip(bounds[:-1], peaks, bounds[1:])]


def is_trace_row(band: np.ndarray, min_inked: float = 0.5) -> bool:
    """A band holds a row of traces when ink runs through at least `min_inked` of the columns the page's ink spans
    (a header's, a footer's or a label's pieces do not)."""
    return bool(band.any(axis=0).mean() >= min_inked)


def traces_box(img: np.ndarray, min_rows: int = 2, reach: float = 0.45,
               pad: float = 0.15, ink: np.ndarray | None = None) -> tuple[list[float] | None, str]:
    """The box the traces fill on this picture (x0, y0, x1, y1 in its pixels), and why there is none ('' when
    there is one): the union of every long piece of ink whose middle lies within `reach` of a row pitch above the
    first row of traces and below the last, so a tall R wave, a calibration pulse or a rhythm strip is kept whole,
    and a header, a footer or a margin is not. `ink`: this picture's ink_mask when it was already
    found."""
    h, w = img.shape[:2]
    mask, tilt = level(ink_mask(img) if ink is None else ink)  # rows of a photo taken askew, levelled; the box turned back below
    scale = mask.shape[1] / w
    columns = np.flatnonzero(mask.any(axis=0))
    if not len(columns):
        return None, "no trace ink found"
    spanned = mask[:, columns[0]:columns[-1] + 1]
    peaks = [k for t, k, b in trace_rows(mask) if is_trace_row(spanned[t:b])]
    if len(peaks) < min_rows:
        return None, f"{len(peaks)} row(s) of traces found (fewer than {min_rows})"
    pitch = float(np.median(np.diff(peaks)))
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    stats = stats[1:]
    middle = stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT] / 2
    inside = (middle >= peaks[0] - reach * pitch) & (middle <= peaks[-1] + reach * pitch)
    x0, y0 = stats[inside, cv2.CC_STAT_LEFT], stats[inside, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[inside, cv2.CC_STAT_WIDTH], y0 + stats[inside, cv2.CC_STAT_HEIGHT]
    grow = pad * pitch  # a spike's faint tip, a label: widened, never cut
    corners = np.array([[x0.min() - grow, y0.min() - grow], [x1.max() + grow, y0.min() - grow],
                        [x1.max() + grow, y1.max() + grow], [x0.min() - grow, y1.max() + grow]])
    if tilt:  # back through the levelling turn: the box around the turned-back corners
        back = cv2.invertAffineTransform(cv2.getRotationMatrix2D((mask.shape[1] / 2, mask.shape[0] / 2), tilt, 1.0))
        corners = corners @ back[:, :2].T + back[:, 2]
    box = [corners[:, 0].min() / scale, corners[:, 1].min() / scale, corners[:, 0].max() / scale,
           corners[:, 1].max() / scale]
    return [float(min(max(v, 0), lim)) for v, lim in zip(box, (w, h, w, h))], ""
