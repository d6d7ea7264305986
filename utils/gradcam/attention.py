"""Where the model looks, measured: CAMs (utils.core.cam) mapped back onto the original photo through the crop or the
rectification, and the share of CAM energy on the sheet, on each lead and on the rhythm strip."""
from __future__ import annotations

import cv2
import numpy as np


def to_photo(cam: np.ndarray, record: dict, photo_size: tuple[int, int]) -> np.ndarray:
    """A map over the prepared picture, placed back on the original photo (W, H) through what was done to it."""
    w0, h0 = photo_size
    if record.get("homography"):  # seg_rect: undo the rectification
        hom = np.array(record["homography"], np.float64)
        corners = np.array(record["corners"], np.float32).reshape(-1, 1, 2)
        rect = cv2.perspectiveTransform(corners, hom.astype(np.float32)).reshape(-1, 2)
        rw, rh = int(round(rect[:, 0].max())) + 1, int(round(rect[:, 1].max())) + 1
        return cv2.warpPerspective(cv2.resize(cam, (rw, rh)), np.linalg.inv(hom), (w0, h0), flags=cv2.INTER_LINEAR)
    if record.get("window"):  # roi_clahe: put the crop back where it was cut from
        x0, y0, x1, y1 = (int(v) for v in record["window"])
        out = np.zeros((h0, w0), np.float32)
        out[y0:y1, x0:x1] = cv2.resize(cam, (x1 - x0, y1 - y0))
        return out
    return cv2.resize(cam, (w0, h0))  # raw


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
