"""Scan-like pictures (ecg-image-kit-like): the page on a scanner, with creases, wrinkles, ink and stamps."""
from __future__ import annotations

import cv2
import numpy as np

from utils.core.splines import catmull_rom
from utils.synth.photo import Picture
from utils.synth.textures import finish, smooth_noise

INKS = ((140, 40, 20), (30, 30, 30), (150, 30, 30), (40, 40, 160))  # BGR: blue, black, dark blue, red


def _creases_and_wrinkles(rng: np.random.Generator, h: int, w: int, severity: float):
    lh, lw = max(8, h // 2), max(8, w // 2)
    field = 1 + rng.uniform(0, 0.06) * severity * smooth_noise(rng, (lh, lw), int(rng.integers(6, 30)))
    field = field.astype(np.float32)
    n = int(rng.choice([0, 0, 1, 2, 3]) if severity > 0 else 0)
    for _ in range(n):  # folds: mostly across the middle or at thirds, slightly skewed
        vertical = rng.random() < 0.5
        pos = rng.choice([1 / 3, 1 / 2, 2 / 3]) + rng.normal(0, 0.03)
        skew = rng.normal(0, 0.02)
        if vertical:
            a, b = (pos * lw, 0), ((pos + skew) * lw, lh)
        else:
            a, b = (0, pos * lh), (lw, (pos + skew) * lh)
        a, b = tuple(int(v) for v in a), tuple(int(v) for v in b)
        depth = rng.uniform(0.05, 0.18) * severity
        cv2.line(field, a, b, 1 - depth, max(1, lw // 700), cv2.LINE_AA)
        off = (1, 0) if vertical else (0, 1)
        cv2.line(field, (a[0] + 2 * off[0], a[1] + 2 * off[1]), (b[0] + 2 * off[0], b[1] + 2 * off[1]),
                 1 + depth / 2, max(1, lw // 500), cv2.LINE_AA)
    field = cv2.GaussianBlur(field, (0, 0), 0.8)
    return field, n


def _handwriting(img: np.ndarray, rng: np.random.Generator, severity: float) -> int:
    h, w = img.shape[:2]
    n = int(rng.poisson(1.2 * severity))
    for _ in range(n):
        x0, y0 = rng.uniform(0.05 * w, 0.8 * w), rng.uniform(0.03 * h, 0.9 * h)
        k = int(rng.integers(5, 14))
        xs = x0 + np.cumsum(rng.uniform(0.004, 0.018, k)) * w
        ys = y0 + rng.normal(0, 0.012, k) * h
        pts = catmull_rom(np.stack([xs, ys], 1), samples=10)
        ink = INKS[int(rng.integers(len(INKS)))]
        cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, ink, max(1, int(w / 900)), cv2.LINE_AA, 4)
    return n


def _stamp(img: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    r = int(rng.uniform(0.04, 0.08) * w)
    c = (int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r)))
    ink = INKS[int(rng.integers(len(INKS)))]
    layer = img.copy()
    cv2.circle(layer, c, r, ink, max(2, r // 12), cv2.LINE_AA)
    cv2.circle(layer, c, int(r * 0.75), ink, max(1, r // 20), cv2.LINE_AA)
    text = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVW"), int(rng.integers(4, 8))))
    cv2.putText(layer, text, (c[0] - int(r * 0.6), c[1] + r // 8), cv2.FONT_HERSHEY_DUPLEX, r / 70, ink,
                max(1, r // 25), cv2.LINE_AA)
    alpha = float(rng.uniform(0.35, 0.75))
    x0, y0 = max(0, c[0] - r - 4), max(0, c[1] - r - 4)
    x1, y1 = min(w, c[0] + r + 4), min(h, c[1] + r + 4)
    img[y0:y1, x0:x1] = cv2.addWeighted(layer[y0:y1, x0:x1], alpha, img[y0:y1, x0:x1], 1 - alpha, 0)


def make_scan(page: np.ndarray, rng: np.random.Generator, severity: float = 1.0) -> Picture:
    ph, pw = page.shape[:2]
    page = page.copy()
    strokes = _handwriting(page, rng, severity)
    stamped = bool(rng.random() < 0.2 * min(severity, 1.5))
    if stamped:
        _stamp(page, rng)
    angle = float(rng.normal(0, 1.2) * severity)
    tilt = abs(np.sin(np.deg2rad(angle)))  # room for the rotated corners, so the whole sheet stays in the scan
    margin = rng.uniform(0, 0.04, 2) * [pw, ph] + tilt * np.array([ph, pw]) / 2 + 0.01 * np.array([pw, ph])
    cw, ch = int(pw + 2 * margin[0]), int(ph + 2 * margin[1])
    mat = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    mat[:, 2] += margin + rng.normal(0, 0.003, 2) * [pw, ph]
    grey = rng.uniform(215, 255) if rng.random() < 0.8 else rng.uniform(20, 90)  # scanner lid or open lid
    bed = tuple(int(v) for v in np.clip(grey + rng.normal(0, 4, 3), 0, 255))
    img = cv2.warpAffine(page, mat, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=bed)
    field, creases = _creases_and_wrinkles(rng, ch, cw, severity)
    tint = np.array([rng.uniform(0.88, 1.0), rng.uniform(0.94, 1.0), 1.0])  # BGR: yellowed paper, scanner lamp
    sigma = float(rng.uniform(0.5, 4) * severity)
    img = finish(img, field, tint, sigma, rng)
    blur = float(rng.uniform(0, 0.8) * severity)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    low_dpi = bool(rng.random() < 0.2 * min(severity, 1.5))
    if low_dpi:  # many archived scans are 72-100 dpi: resolution lost, then stored at the page size again
        f = float(rng.uniform(0.35, 0.6))
        small = cv2.resize(img, (max(2, int(cw * f)), max(2, int(ch * f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (cw, ch), interpolation=cv2.INTER_LINEAR)
    greyscale = bool(rng.random() < 0.15)
    if greyscale:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)

    def forward(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, np.float64).reshape(-1, 2)
        return p @ mat[:, :2].T + mat[:, 2]

    params = {"canvas": [cw, ch], "rotation_deg": round(angle, 2), "creases": creases, "handwriting": strokes,
              "stamp": stamped, "low_dpi": low_dpi, "noise_sigma": round(sigma, 2), "blur_sigma": round(blur, 2), "greyscale": greyscale}
    return Picture(img, forward, params)
