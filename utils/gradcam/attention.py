"""Where the model looks, measured: the share of a CAM's energy (mapped back onto the original photo by
utils.core.cam.to_photo) on the sheet, on each lead and on the rhythm strip."""
from __future__ import annotations

import cv2
import numpy as np


def _polygon_mask(shape, quad) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(quad) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def energy_shares(cam_photo: np.ndarray, paper_corners, lead_boxes: dict | None = None) -> dict[str, float]:
    """Share of the map's energy on the sheet, and on each lead box (quadrilaterals in photo pixels)."""
    total = float(cam_photo.sum())
    if total <= 0:
        return {"sheet": float("nan")}
    out = {"sheet": float(cam_photo[_polygon_mask(cam_photo.shape, paper_corners)].sum() / total)}
    for name, box in (lead_boxes or {}).items():
        out[name] = float(cam_photo[_polygon_mask(cam_photo.shape, box["corners"])].sum() / total)
    return out
