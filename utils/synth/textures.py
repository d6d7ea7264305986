"""Procedural backgrounds, lighting fields and noise, computed at low resolution and upsampled (speed)."""
from __future__ import annotations

import cv2
import numpy as np

from utils.core.splines import catmull_rom, random_blob

BACKGROUNDS = ("wood", "fabric", "desk", "speckle", "paper_pile", "dark_cloth")
_NOISE_TILE: dict[int, np.ndarray] = {}


def smooth_noise(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Band-limited noise in [-1, 1]: random values on a coarse grid, bicubically upsampled."""
    h, w = shape
    coarse = rng.uniform(-1, 1, (max(2, int(cells * h / max(h, w)) + 2), max(2, int(cells * w / max(h, w)) + 2)))
    return cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """A table, cloth or clutter surface, BGR uint8 of (h, w)."""
    kind = str(rng.choice(BACKGROUNDS))
    lh, lw = max(8, h // 4), max(8, w // 4)
    base = rng.uniform(40, 220, 3)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    if kind == "wood":
        base = rng.uniform([20, 60, 110], [90, 140, 200])
        warp = smooth_noise(rng, (lh, lw), 6) * rng.uniform(5, 20)
        ang = rng.uniform(0, np.pi)
        u = xx * np.cos(ang) + yy * np.sin(ang) + warp
        grain = 0.5 + 0.5 * np.sin(u / rng.uniform(2, 6)) * smooth_noise(rng, (lh, lw), 3)
        tex = base[None, None, :] * (0.75 + 0.35 * grain[..., None])
    elif kind == "fabric":
        period = rng.uniform(1.2, 3.0)
        weave = np.sin(xx * np.pi / period) * np.sin(yy * np.pi / period)
        tex = base[None, None, :] * (0.85 + 0.12 * weave[..., None] + 0.08 * smooth_noise(rng, (lh, lw), 8)[..., None])
    elif kind == "speckle":
        tex = base[None, None, :] * (0.8 + 0.25 * rng.random((lh, lw, 1))) * (1 + 0.1 * smooth_noise(rng, (lh, lw), 4)[..., None])
    elif kind == "dark_cloth":
        tex = rng.uniform(10, 60, 3)[None, None, :] * (1 + 0.25 * smooth_noise(rng, (lh, lw), 10)[..., None])
    else:  # desk or a pile of other papers
        tex = base[None, None, :] * (1 + 0.08 * smooth_noise(rng, (lh, lw), 3)[..., None]) * np.ones((lh, lw, 1))
    img = cv2.resize(np.clip(tex, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "paper_pile":
        for _ in range(int(rng.integers(1, 4))):
            c = rng.uniform([0, 0], [w, h])
            rect = ((float(c[0]), float(c[1])), (float(rng.uniform(0.3, 0.8) * w), float(rng.uniform(0.3, 0.8) * h)),
                    float(rng.uniform(-40, 40)))
            pts = cv2.boxPoints(rect).astype(np.int32)
            cv2.fillPoly(img, [pts], tuple(int(v) for v in rng.uniform(200, 250, 3)), cv2.LINE_AA)
    _clutter(img, rng)
    return img, kind


def _clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Objects lying around: pens, a phone, a mug seen from above."""
    h, w = img.shape[:2]
    scale = max(h, w)
    for _ in range(int(rng.poisson(1.2))):
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        c = rng.uniform([0, 0], [w, h])
        kind = rng.integers(3)
        if kind == 0:  # pen
            d = np.array([np.cos(a := rng.uniform(0, np.pi)), np.sin(a)]) * rng.uniform(0.08, 0.2) * scale
            cv2.line(img, tuple((c - d).astype(int)), tuple((c + d).astype(int)), colour,
                     max(2, int(scale * 0.008)), cv2.LINE_AA)
        elif kind == 1:  # phone
            rect = ((float(c[0]), float(c[1])), (float(0.07 * scale), float(0.14 * scale)), float(rng.uniform(0, 180)))
            cv2.fillPoly(img, [cv2.boxPoints(rect).astype(np.int32)], (20, 20, 20), cv2.LINE_AA)
        else:  # mug
            cv2.circle(img, tuple(c.astype(int)), int(0.05 * scale), colour, -1, cv2.LINE_AA)


def lighting(rng: np.random.Generator, h: int, w: int, severity: float, shadows: int) -> tuple[np.ndarray, dict]:
    """Low-resolution multiplicative light field: gradient, vignette and shadows (object, spline, edge)."""
    lh, lw = max(8, h // 8), max(8, w // 8)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    xn, yn = xx / lw - 0.5, yy / lh - 0.5
    ang = rng.uniform(0, 2 * np.pi)
    grad = float(rng.uniform(0, 0.35) * severity)
    vig = float(rng.uniform(0, 0.45) * severity)
    field = rng.uniform(0.85, 1.1) * (1 + grad * (xn * np.cos(ang) + yn * np.sin(ang)))
    field *= 1 - vig * (xn ** 2 + yn ** 2) * 2
    field *= 1 + 0.06 * severity * smooth_noise(rng, (lh, lw), 4)
    mask = np.zeros((lh, lw), np.float32)
    kinds = []
    for _ in range(shadows):
        kind = str(rng.choice(["spline", "object", "edge"]))
        kinds.append(kind)
        dark = float(rng.uniform(0.15, 0.55) * min(severity, 1.5))
        if kind == "spline":
            pts = random_blob(rng, rng.uniform([0, 0], [lw, lh]), rng.uniform(0.15, 0.5) * np.array([lw, lh]))
        elif kind == "object":
            c = rng.uniform([0, 0], [lw, lh])
            pts = catmull_rom(c + rng.normal(0, 0.18, (4, 2)) * [lw, lh], samples=4, closed=True)
        else:  # the shadow of the photographer or a wall: a half plane with a soft boundary
            p0 = rng.uniform([0, 0], [lw, lh])
            d = np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
            n = np.array([-d[1], d[0]])
            pts = np.array([p0 - d * 3 * lw, p0 + d * 3 * lw, p0 + d * 3 * lw + n * 3 * lw, p0 - d * 3 * lw + n * 3 * lw])
        layer = np.zeros_like(mask)
        cv2.fillPoly(layer, [np.round(pts * 16).astype(np.int32)], dark, cv2.LINE_AA, 4)
        mask = np.maximum(mask, layer)
    if shadows:
        soft = max(1.0, rng.uniform(0.5, 3.0) * min(lh, lw) / 60)
        mask = cv2.GaussianBlur(mask, (0, 0), soft)
    field = np.clip(field * (1 - mask), 0.15, 1.4).astype(np.float32)
    return field, {"light_gradient": round(grad, 3), "vignette": round(vig, 3), "shadows": kinds}


def noise_tile(size: int = 1024) -> np.ndarray:
    """A fixed noise tile (uint8, 128 + 16 N(0, 1)), cached per process, doubled so offsets need no wrap."""
    if size not in _NOISE_TILE:
        noise = np.random.default_rng(12345).standard_normal((size, size, 3)) * 16 + 128
        _NOISE_TILE[size] = np.tile(np.clip(noise, 0, 255).astype(np.uint8), (2, 2, 1))
    return _NOISE_TILE[size]


def tiled_noise(rng: np.random.Generator, h: int, w: int, size: int = 1024) -> np.ndarray:
    """Sensor noise of shape (h, w, 3) as uint8 around 128 (16 per unit sigma), from a random tile offset."""
    oy, ox = (int(v) for v in rng.integers(0, size, 2))
    sub = noise_tile(size)[oy:oy + size, ox:ox + size]
    return np.tile(sub, (h // size + 1, w // size + 1, 1))[:h, :w]


def finish(img: np.ndarray, light: np.ndarray | None, gains, noise_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Apply a light field (any resolution), per-channel colour gains and sensor noise, in uint8 SIMD passes."""
    h, w = img.shape[:2]
    low = np.ones((8, 8), np.float32) if light is None else light
    field = low[..., None] * np.asarray(gains, np.float32)[None, None, :]
    field8 = np.clip(field * 128, 0, 255).astype(np.uint8)  # 128 = gain 1
    full = cv2.resize(field8, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.multiply(img, full, scale=1 / 128)
    if noise_sigma > 0:
        k = noise_sigma / 16
        out = cv2.addWeighted(out, 1.0, tiled_noise(rng, h, w), k, -128 * k)
    return out
