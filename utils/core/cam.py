"""The one Grad-CAM (pytorch-grad-cam), a primitive that serving (predict --gradcam) and step 06 share: the layer
each backbone is hooked at, the token-to-grid reshape transformers need, maps per label averaged over the ensemble's
models, and the overlay drawn over the prepared picture."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from utils.core.labels import LABELS


def cam_target_layer(model: torch.nn.Module):
    """The layer Grad-CAM hooks: ConvNeXt's last stage, EfficientNet's head, ResNet's last block, a transformer's
    last block's norm."""
    if hasattr(model, "stages"):
        return model.stages[-1]
    if hasattr(model, "conv_head"):  # EfficientNet: the last feature map, after the head's norm and activation
        return model.bn2
    if hasattr(model, "layer4"):
        return model.layer4[-1]
    if hasattr(model, "blocks"):
        return model.blocks[-1].norm1
    if hasattr(model, "layers"):
        return model.layers[-1].blocks[-1].norm1
    raise ValueError(f"no Grad-CAM target layer known for {type(model).__name__}")


def reshape_transform(model):
    """Token-to-grid reshape for ViT and Swin (Grad-CAM needs (B, C, H, W)); None for CNNs."""
    name = type(model).__name__.lower()
    if "visiontransformer" in name:
        grid = model.patch_embed.grid_size
        skip = model.num_prefix_tokens

        def vit(t):
            return t[:, skip:, :].reshape(t.size(0), grid[0], grid[1], t.size(-1)).permute(0, 3, 1, 2)
        return vit
    if "swin" in name:
        return lambda t: t.permute(0, 3, 1, 2) if t.ndim == 4 else t
    return None


def cam_maps(models, x: torch.Tensor, method: str = "gradcam", labels=range(len(LABELS))) -> np.ndarray:
    """(len(labels), H, W) maps in [0, 1] at the input's size, averaged over the ensemble's models."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = cam_kind(method)
    out = []
    for k in labels:
        acc = None
        for m in models:
            with kind(model=m, target_layers=[cam_target_layer(m)],
                               reshape_transform=reshape_transform(m)) as cam:
                g = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0]
            acc = g if acc is None else acc + g
        acc = acc / len(models)
        out.append(acc / acc.max() if acc.max() > 0 else acc)
    return np.stack(out)




def cam_kind(method: str):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, XGradCAM

    kinds = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM}
    if method not in kinds:
        raise ValueError(f"cam_method {method!r}: choose from {sorted(kinds)}")
    return kinds[method]


def save_overlay(model, x: torch.Tensor, prepared_bgr: np.ndarray, probs, path: Path, method: str = "gradcam") -> Path:
    """The CAM of the most probable label over the prepared picture, with that label and its probability."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    k = int(np.argmax(probs))
    grey = cam_maps([model], x, method, [k])[0]
    h, w = prepared_bgr.shape[:2]
    rgb = cv2.cvtColor(prepared_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    over = show_cam_on_image(rgb, cv2.resize(grey, (w, h)), use_rgb=True)
    cv2.putText(over, f"{LABELS[k]} {probs[k]:.2f}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(over, cv2.COLOR_RGB2BGR))
    return path
