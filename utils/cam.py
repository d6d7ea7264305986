"""Grad-CAM (pytorch-grad-cam) on the logits of one label at a time, drawn over the prepared picture."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .metrics import LABELS
from .models import cam_target_layer


def cam_map(model: torch.nn.Module, x: torch.Tensor, label: int, method: str = "gradcam") -> np.ndarray:
    """(H, W) map in [0, 1] at the input's size for one label (no torch.no_grad here: CAM needs gradients)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kinds = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM}
    if method not in kinds:
        raise ValueError(f"CAM method {method!r}: choose from {sorted(kinds)}")
    with kinds[method](model=model, target_layers=[cam_target_layer(model)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(label)])[0]


def save_overlay(model, x: torch.Tensor, prepared_bgr: np.ndarray, probs, path: Path) -> Path:
    """The CAM of the most probable label over the prepared picture, with that label and its probability."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    k = int(np.argmax(probs))
    grey = cam_map(model, x, k)
    h, w = prepared_bgr.shape[:2]
    rgb = cv2.cvtColor(prepared_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    over = show_cam_on_image(rgb, cv2.resize(grey, (w, h)), use_rgb=True)
    cv2.putText(over, f"{LABELS[k]} {probs[k]:.2f}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(over, cv2.COLOR_RGB2BGR))
    return path
