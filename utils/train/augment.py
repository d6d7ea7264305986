"""Training augmentations (albumentations 2.0.8) that keep an ECG's meaning, plus the paper's spline shadows.

No flips: a horizontal flip reverses time, a vertical one inverts polarity; both change the diagnosis.
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from utils.core.splines import random_blob


class CatmullRomShadow(A.ImageOnlyTransform):
    """Darken smooth closed regions bounded by Catmull-Rom splines (albumentations has no such shadow)."""

    def __init__(self, num_shadows=(1, 2), darkness=(0.2, 0.55), blur=(0.01, 0.05), p: float = 0.5):
        super().__init__(p=p)
        self.num_shadows, self.darkness, self.blur = num_shadows, darkness, blur

    def get_params(self):
        return {"shadow_seed": int(self.py_random.randint(0, 2 ** 31 - 1))}

    def apply(self, img: np.ndarray, shadow_seed: int = 0, **params) -> np.ndarray:
        rng = np.random.default_rng(shadow_seed)
        h, w = img.shape[:2]
        mask = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(self.num_shadows[0], self.num_shadows[1] + 1))):
            pts = random_blob(rng, rng.uniform([0, 0], [w, h]), rng.uniform(0.15, 0.45) * np.array([w, h]))
            layer = np.zeros_like(mask)
            cv2.fillPoly(layer, [np.round(pts * 16).astype(np.int32)], float(rng.uniform(*self.darkness)),
                         cv2.LINE_AA, 4)
            mask = np.maximum(mask, layer)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, rng.uniform(*self.blur) * max(h, w)))
        shade = 1.0 - mask
        out = img.astype(np.float32) * (shade[..., None] if img.ndim == 3 else shade)
        return np.clip(out, 0, 255).astype(img.dtype)

    def get_transform_init_args_names(self):
        return ("num_shadows", "darkness", "blur")


def train_transform(strength: float = 1.0, seed: int | None = None) -> A.Compose:
    """The paper's mix: small rotation, elastic, perspective, brightness/contrast, spline shadows."""
    s = strength
    return A.Compose([
        A.Rotate(limit=(-4 * s, 4 * s), border_mode=cv2.BORDER_REPLICATE, p=0.5),
        A.ElasticTransform(alpha=20 * s, sigma=12, p=0.2),
        A.Perspective(scale=(0.01, 0.04 * s), fit_output=False, border_mode=cv2.BORDER_REPLICATE, p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.2 * s, contrast_limit=0.2 * s, p=0.5),
        CatmullRomShadow(p=0.3 * s),
    ], seed=seed)
