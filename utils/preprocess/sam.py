"""Optional SAM segmentation of the sheet, prompted with the detector's box (the paper's Step 3).

segment-anything returns a randomly initialised model when no checkpoint is given; here asking for SAM without a
checkpoint file is an error, and the checkpoint is loaded on the CPU by hand (the library loads it without
map_location, which fails on machines without the GPU it was saved from).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.preprocess.roi import contour_to_quad


class SamSegmenter:
    def __init__(self, checkpoint: str, model_type: str = "vit_b", device: str = "cpu"):
        if not checkpoint:
            raise FileNotFoundError("seg_method 'sam' needs a SAM checkpoint: set sam_checkpoint to the .pth file "
                                    "(for example sam_vit_b_01ec64.pth attached as a Kaggle dataset)")
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"SAM checkpoint {path} not found (set by 'sam_checkpoint')")
        import torch
        from segment_anything import SamPredictor, sam_model_registry

        if model_type not in sam_model_registry:
            raise ValueError(f"sam_model_type {model_type!r}: choose from {sorted(sam_model_registry)}")
        model = sam_model_registry[model_type](checkpoint=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.predictor = SamPredictor(model.to(device).eval())

    def corners(self, img: np.ndarray, box) -> list | None:
        """Four sheet corners from the best SAM mask inside the box, or None."""
        self.predictor.set_image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        masks, scores, _ = self.predictor.predict(box=np.asarray(box, np.float32), multimask_output=True)
        mask = (masks[int(np.argmax(scores))] * 255).astype(np.uint8)
        return mask_to_quad(mask)


def mask_to_quad(mask: np.ndarray) -> list | None:
    """The quadrilateral of a sheet mask (its largest outline), or None for an empty mask."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    return contour_to_quad(max(contours, key=cv2.contourArea)).tolist()
