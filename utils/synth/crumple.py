"""Crumpled, folded and creased paper, procedural: a height field of the sheet, its normals, and the page shaded by a
light from a random direction, so facets get their own brightness (deep shadows included) and creases show as hard
edges where the surface bends, in any direction. In photos the sheet is also seen off its perpendicular, so the trace
bends with the paper (`relief_warp`); a scanner's lid presses the sheet flat, so scans keep the trace where it was drawn.

The height field is a sum of folds: each fold is a line through the sheet at any angle, and the surface bends along
it (|distance| to the line: a ridge or a valley), so the sheet is a patchwork of flat facets meeting at creases. A few
long folds crease the sheet in halves or thirds; many short-range ones crumple it.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from scipy.ndimage import map_coordinates


def height_field(rng: np.random.Generator, h: int, w: int, strength: float, creases: int | None = None,
                 scale: int = 4) -> tuple[np.ndarray, dict]:
    """(h // scale, w // scale) heights in units of the sheet's short side, and what was drawn; strength 0 gives a
    flat sheet.

    `creases` long folds (None: 0-3 drawn per page, none at strength 0) plus crumpling folds whose number grows with
    the strength.
    The field is coarse (1/scale of the page): the shading computed on it is upsampled, a facet being flat.
    """
    rng_creases, rng_crumple = rng.spawn(2)  # more creases never change the crumpling, nor the reverse
    drawn = int(rng_creases.choice([0, 1, 1, 2, 3]))
    n_creases = (drawn if strength > 0 else 0) if creases is None else int(creases)
    n_crumple = int(round(strength * rng_crumple.uniform(6, 14)))
    lh, lw = max(2, h // scale), max(2, w // scale)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32) / min(lh, lw)
    field = np.zeros((lh, lw), np.float32)
    folds = []
    for k in range(n_creases + n_crumple):
        crease = k < n_creases
        r = rng_creases if crease else rng_crumple
        angle = r.uniform(0, np.pi)
        nx, ny = np.cos(angle), np.sin(angle)
        cx, cy = r.uniform(0.15, 0.85) * lw / min(lh, lw), r.uniform(0.15, 0.85) * lh / min(lh, lw)
        depth = (r.uniform(0.02, 0.05) if crease else r.uniform(0.005, 0.03) * strength) * r.choice([-1, 1])
        field += depth * np.abs((xx - cx) * nx + (yy - cy) * ny)
        folds.append({"angle_deg": round(float(np.degrees(angle)), 1), "depth": round(float(depth), 4),
                      "crease": bool(crease)})
    if strength <= 0 and n_creases == 0:
        return np.zeros((h, w), np.float32), {"creases": 0, "crumple_folds": 0}
    return field, {"creases": n_creases, "crumple_folds": n_crumple, "folds": folds}


def shading(height: np.ndarray, light_deg: float, elevation_deg: float = 35.0, relief: float = 1.0) -> np.ndarray:
    """Lambertian brightness of the surface under a light from `light_deg` (0: from the right, 90: from the bottom),
    normalised so a flat sheet is 1."""
    s = min(height.shape)
    gy, gx = np.gradient(height.astype(np.float32) * s * relief)
    normal = np.stack([-gx, -gy, np.ones_like(gx)])
    normal /= np.linalg.norm(normal, axis=0, keepdims=True)
    el, az = np.radians(elevation_deg), np.radians(light_deg)
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], np.float32)
    return (np.tensordot(light, normal, axes=1) / light[2]).astype(np.float32)


def relief_warp(field: np.ndarray, page_shape, view_deg: float, tilt: float
                ) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """Where a camera sees the sheet `tilt` (tan of the angle) off its perpendicular, from `view_deg` in the page's
    plane, each point shows displaced along that direction by its height: page px (..., 2) -> displacement px, and
    the largest displacement. The plane that best fits the field is taken out first (a tilted flat sheet is the
    perspective's business), so only the bends move the trace, which kinks where it crosses a crease."""
    ph, pw = page_shape[:2]
    lh, lw = field.shape
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float64)
    design = np.c_[xx.ravel(), yy.ravel(), np.ones(xx.size)]
    coef, *_ = np.linalg.lstsq(design, field.ravel().astype(np.float64), rcond=None)
    shift = (field - (design @ coef).reshape(lh, lw)) * min(ph, pw) * tilt  # page px along the view direction
    direction = np.array([np.cos(np.radians(view_deg)), np.sin(np.radians(view_deg))])

    def warp(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, np.float64)
        rows = (p[..., 1] + 0.5) * (lh / ph) - 0.5
        cols = (p[..., 0] + 0.5) * (lw / pw) - 0.5
        amount = map_coordinates(shift, [rows.ravel(), cols.ravel()], order=1, mode="nearest").reshape(rows.shape)
        return amount[..., None] * direction

    return warp, float(np.abs(shift).max())


def crumple_page(page: np.ndarray, rng: np.random.Generator, strength: float, creases: int | None = None
                 ) -> tuple[np.ndarray, dict, Callable[[np.ndarray], np.ndarray] | None]:
    """The page as if crumpled and flattened again: facet shading and crease lines, and the warp of its relief as a
    camera sees it (`relief_warp`; None for a flat sheet). Strength 0 and no crease: the page as it was.

    Every draw happens whatever the strength, so a sweep changes the damage and nothing else."""
    h, w = page.shape[:2]
    light_deg, elevation = float(rng.uniform(0, 360)), float(rng.uniform(25, 55))
    view_deg, tilt = float(rng.uniform(0, 360)), float(rng.uniform(0.05, 0.25))
    field, info = height_field(rng, h, w, strength, creases)
    info.update(strength=round(float(strength), 3), light_deg=round(light_deg, 1), elevation_deg=round(elevation, 1))
    if not info["crumple_folds"] and not info["creases"]:
        return page, info, None
    warp, largest = relief_warp(field, page.shape, view_deg, tilt)
    info["relief"] = {"view_deg": round(view_deg, 1), "tilt": round(tilt, 3), "largest_shift_px": round(largest, 1)}
    shade = np.clip(shading(field, light_deg, elevation), 0.25, 1.3)
    shade = cv2.resize(shade, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.multiply(page, cv2.merge([shade] * 3), dtype=cv2.CV_8U), info, warp
