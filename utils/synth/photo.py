"""Photo-like pictures (GenECG-like): the printed page on a surface, seen by a hand-held camera.

One remap does perspective and paper curl together; the forward map of page points gives exact annotations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from utils.synth.textures import background, finish, lighting


def page_outline(pw: int, ph: int, n: int = 40) -> np.ndarray:
    """Points along the page border, clockwise from the top-left corner."""
    t = np.linspace(0, 1, n, endpoint=False)
    return np.vstack([np.stack([t * pw, 0 * t], 1), np.stack([pw + 0 * t, t * ph], 1),
                      np.stack([pw - t * pw, ph + 0 * t], 1), np.stack([0 * t, ph - t * ph], 1)])


@dataclass
class Picture:
    image: np.ndarray                          # BGR uint8
    forward: Callable[[np.ndarray], np.ndarray]  # page px (N, 2) -> picture px (N, 2)
    params: dict


def _curl(rng: np.random.Generator, w: int, h: int, severity: float):
    """Displacement field of a bent sheet, in page pixels: a bow across the page and one lifted corner."""
    bow = rng.uniform(-0.012, 0.012) * severity * h
    lift = rng.uniform(0, 0.02) * severity * h
    corner = rng.integers(4)
    cx, cy = (w if corner in (1, 2) else 0), (h if corner in (2, 3) else 0)

    def disp(p: np.ndarray) -> np.ndarray:
        u, v = p[..., 0], p[..., 1]
        dy = bow * ((2 * u / w - 1) ** 2 - 1 / 3)
        r = np.hypot(u - cx, v - cy) / (0.3 * max(w, h))
        dlift = lift * np.exp(-r ** 2)
        return np.stack([np.sign(w / 2 - cx) * -dlift * 0.3, dy - dlift * np.sign(h / 2 - cy) * 0.5], -1)

    return disp, {"bow_px": round(float(bow), 1), "corner_lift_px": round(float(lift), 1)}


def _placement(rng: np.random.Generator, pw: int, ph: int, max_side: int, severity: float):
    portrait = rng.random() < 0.5
    long_side = int(max_side * rng.uniform(0.7, 1.0))
    aspect = float(rng.choice([4 / 3, 16 / 9, 3 / 2]))
    cw, ch = (int(long_side / aspect), long_side) if portrait else (long_side, int(long_side / aspect))
    frac = rng.uniform(0.6, 0.92)
    scale = frac * min(cw / pw, ch / ph)
    sw, sh = pw * scale, ph * scale
    rot = np.deg2rad(rng.normal(0, 4) * severity)
    centre = np.array([rng.uniform(sw / 2 + 0.02 * cw, cw - sw / 2 - 0.02 * cw) if cw > sw * 1.05 else cw / 2,
                       rng.uniform(sh / 2 + 0.02 * ch, ch - sh / 2 - 0.02 * ch) if ch > sh * 1.05 else ch / 2])
    local = np.array([[-sw, -sh], [sw, -sh], [sw, sh], [-sw, sh]]) / 2
    keystone = rng.uniform(-0.1, 0.1) * severity  # camera tilted towards the top or bottom edge
    local[:2, 0] *= 1 - keystone
    local[2:, 0] *= 1 + keystone
    local += rng.normal(0, 0.025 * severity, (4, 2)) * [sw, sh]
    rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    dst = local @ rmat.T + centre
    # keep the whole sheet in the frame
    lo, hi = dst.min(0), dst.max(0)
    shift = np.maximum(0, 2 - lo) - np.maximum(0, hi - np.array([cw, ch]) + 2)
    dst = dst + shift
    params = {"canvas": [cw, ch], "sheet_fraction": round(float(frac), 3), "rotation_deg": round(float(np.rad2deg(rot)), 2),
              "keystone": round(float(keystone), 3)}
    return (cw, ch), dst.astype(np.float32), params


def make_photo(page: np.ndarray, rng: np.random.Generator, max_side: int, severity: float = 1.0,
               perspective: float | None = None, shadow: float | None = None, blur: float | None = None,
               relief: Callable[[np.ndarray], np.ndarray] | None = None) -> Picture:
    """`severity` scales every artefact; `perspective`, `shadow` and `blur` set one apart from it. `relief`: the
    displacement of a crumpled sheet's bends as the camera sees them (page px -> px; `crumple.relief_warp`).

    Every random draw happens whatever the strengths, so the same index gives the same page, placement and
    lighting pattern at every strength: a sweep of one artefact changes nothing else.
    """
    geo = severity if perspective is None else perspective
    light_s = severity if shadow is None else shadow
    blur_s = severity if blur is None else blur
    ph, pw = page.shape[:2]
    (cw, ch), dst, params = _placement(rng, pw, ph, max_side, geo)
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    hom = cv2.getPerspectiveTransform(src, dst)
    curl, curl_params = _curl(rng, pw, ph, geo)

    def disp(p: np.ndarray) -> np.ndarray:
        return curl(p) if relief is None else curl(p) + relief(p)

    def forward(p: np.ndarray) -> np.ndarray:
        q = np.asarray(p, np.float64) + disp(np.asarray(p, np.float64))
        return cv2.perspectiveTransform(q.reshape(-1, 1, 2), hom).reshape(-1, 2)

    # the bent sheet must stay whole inside the frame: shift it back where the curl pushed it out
    outline = forward(page_outline(pw, ph))
    lo, hi = outline.min(0), outline.max(0)
    shift = np.maximum(0, 2 - lo) - np.maximum(0, hi - np.array([cw, ch]) + 2)
    hom = np.array([[1, 0, shift[0]], [0, 1, shift[1]], [0, 0, 1]]) @ hom
    inv = np.linalg.inv(hom)

    step = 8  # the inverse map is smooth: compute it coarsely, then upsample
    gx = (np.arange(0, cw / step + 1) + 0.5) * step - 0.5
    gy = (np.arange(0, ch / step + 1) + 0.5) * step - 0.5
    grid = np.stack(np.meshgrid(gx, gy), -1)
    p0 = cv2.perspectiveTransform(grid.reshape(-1, 1, 2), inv).reshape(grid.shape)
    p = p0.copy()
    for _ in range(4):  # invert the curl (and relief) by fixed-point iteration: both move points far less than 1 px/px
        p = p0 - disp(p)
    lowx = p[..., 0].astype(np.float32)
    lowy = p[..., 1].astype(np.float32)
    full_w, full_h = lowx.shape[1] * step, lowx.shape[0] * step
    mapx = cv2.resize(lowx, (full_w, full_h), interpolation=cv2.INTER_LINEAR)[:ch, :cw]
    mapy = cv2.resize(lowy, (full_w, full_h), interpolation=cv2.INTER_LINEAR)[:ch, :cw]
    canvas, bg_kind = background(rng, ch, cw)
    shrink = float(np.linalg.norm(dst[1] - dst[0]) / pw)
    if shrink < 0.8:  # minifying a remap aliases the grid into moire: area-downsample the page first
        f = min(1.0, shrink * 1.25)
        page = cv2.resize(page, (max(2, int(pw * f)), max(2, int(ph * f))), interpolation=cv2.INTER_AREA)
        mapx, mapy = mapx * (page.shape[1] / pw), mapy * (page.shape[0] / ph)
    cv2.remap(page, mapx, mapy, cv2.INTER_LINEAR, dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
    light, light_params = lighting(rng, ch, cw, light_s, int(rng.choice([0, 1, 1, 2, 3])))
    temp = float(rng.uniform(-1, 1) * severity)
    gains = (1 - 0.1 * temp, 1.0, 1 + 0.1 * temp)  # BGR: warm light boosts red, cold boosts blue
    sigma = float(rng.uniform(1, 6) * severity)
    img = finish(canvas, light, gains, sigma, rng)
    blur = float(rng.uniform(0, 1.2) * blur_s * max(cw, ch) / 2000)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    motion = 0
    motion_draw, motion_len, ends = rng.random(), int(rng.integers(3, 10)), rng.random(2)  # drawn whatever the strength
    if motion_draw < 0.25 * min(blur_s, 1):
        motion = int(round(motion_len * max(1.0, blur_s)))
        k = np.zeros((motion, motion), np.float32)
        cv2.line(k, (0, int(ends[0] * motion)), (motion - 1, int(ends[1] * motion)), 1.0, 1)
        img = cv2.filter2D(img, -1, k / k.sum())
    params.update(curl_params, **light_params, background=bg_kind, colour_temperature=round(temp, 3),
                  noise_sigma=round(sigma, 2), defocus_sigma=round(blur, 2), motion_blur_px=motion)
    return Picture(img, forward, params)
