"""Catmull-Rom splines: smooth curves through control points (shadow shapes, handwriting strokes).

No library in the stack offers them (albumentations has no spline shadow), so they are written here.
"""
from __future__ import annotations

import numpy as np


def catmull_rom(points: np.ndarray, samples: int = 16, closed: bool = False) -> np.ndarray:
    """Uniform Catmull-Rom curve through `points` (N, 2); returns (M, 2) points on the curve."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError(f"catmull_rom needs at least 2 points of shape (N, 2), got {p.shape}")
    if closed:
        ext = np.vstack([p[-1:], p, p[:2]])
    else:
        ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    segs = []
    for i in range(len(ext) - 3):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        segs.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                           + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    curve = np.vstack(segs)
    return curve if closed else np.vstack([curve, p[-1:]])


def random_blob(rng: np.random.Generator, center, radius, n: int = 7, jitter: float = 0.45) -> np.ndarray:
    """A smooth closed shape: a Catmull-Rom curve through points at jittered angles and radii."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = np.asarray(radius) * (1 + rng.uniform(-jitter, jitter, n))[:, None]
    pts = np.asarray(center) + rad * np.stack([np.cos(ang), np.sin(ang)], 1)
    return catmull_rom(pts, samples=12, closed=True)
