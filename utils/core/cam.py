"""The one Grad-CAM (pytorch-grad-cam), a primitive that serving (predict --gradcam) and step 06 share: the layer
each backbone is hooked at, the token-to-grid reshape transformers need, maps per label averaged over the ensemble's
models, a map placed back on the original photo through the crop or rectification, and the overlay drawn over a
picture."""
from __future__ import annotations

from contextlib import contextmanager
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
    """(len(labels), H, W) maps in [0, 1] at the input's size, averaged over the ensemble's models (x: one picture).
    Every label's map comes from one pass per model: the picture repeated once per label, each copy with its label
    as its target (in eval mode the copies do not meet, so each map is the one a pass of its own gives)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind, labels = cam_kind(method), list(labels)
    batch = x.expand(len(labels), *x.shape[1:])
    acc = None
    for m in models:
        layer = cam_target_layer(m)
        with graph_from(m, layer), kind(model=m, target_layers=[layer], reshape_transform=reshape_transform(m)) as cam:
            g = cam(input_tensor=batch, targets=[ClassifierOutputTarget(k) for k in labels])
        acc = g if acc is None else acc + g
    acc = acc / len(models)
    top = acc.reshape(len(labels), -1).max(axis=1)
    return np.stack([a / t if t > 0 else a for a, t in zip(acc, top)])


@contextmanager
def graph_from(model: torch.nn.Module, layer: torch.nn.Module):
    """The backward pass from the hooked layer on only. The model's weights are frozen and the layer's output becomes
    the graph's leaf, so the gradient the CAM reads (the scores' gradient at that layer) is computed as before while
    nothing before the layer is differentiated: without this every CAM ran a whole backward pass through the backbone
    for weight gradients nobody reads. Registered before the CAM's own hooks, which see the leaf; the weights'
    `requires_grad` is given back afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    handle = layer.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True))
    try:
        yield
    finally:
        handle.remove()
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


# The methods the suite offers, all pytorch-grad-cam's: gradient-weighted (Grad-CAM, Grad-CAM++, XGrad-CAM), per
# location (Layer-CAM) and gradient-free (Eigen-CAM: the first principal component of the activations, the same map
# for every label).
CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")


def cam_kind(method: str):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM

    kinds = dict(zip(CAM_METHODS, (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenCAM)))
    if method not in kinds:
        raise ValueError(f"cam_method {method!r}: choose from {list(CAM_METHODS)}")
    return kinds[method]


class MeanLogits(torch.nn.Module):
    """The ensemble as one model (its folds' logits averaged), for the metrics that run a model on changed pictures."""

    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


def heat_overlay(picture_bgr: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """RGB: the picture with the map (at any size, values in [0, 1]) as a heat map over it (pytorch-grad-cam's)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    h, w = picture_bgr.shape[:2]
    rgb = cv2.cvtColor(picture_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    return show_cam_on_image(rgb, np.clip(cv2.resize(cam.astype(np.float32), (w, h)), 0, 1), use_rgb=True)


def save_overlay(picture_bgr: np.ndarray, cam: np.ndarray, caption: str, path: Path) -> Path:
    """The map over the picture with a caption, written as an image file."""
    over = heat_overlay(picture_bgr, cam)
    scale = max(over.shape[:2]) / 1000
    cv2.putText(over, caption, (10, int(40 * max(scale, 0.75))), cv2.FONT_HERSHEY_SIMPLEX, max(0.9 * scale, 0.7),
                (255, 255, 255), max(2, int(2 * scale)), cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(over, cv2.COLOR_RGB2BGR))
    return path


def to_photo(cam: np.ndarray, record: dict, photo_size: tuple[int, int]) -> np.ndarray:
    """A map over the prepared picture, placed back on the original photo (W, H) through what was done to it: the
    crop or rectification, and the quarter turn that stood the page upright first (`turn`, degrees)."""
    k = int(record.get("turn") or 0) // 90 % 4
    w0, h0 = photo_size[::-1] if k % 2 else photo_size  # the upright picture's size
    return np.ascontiguousarray(np.rot90(_on_upright(cam, record, (w0, h0)), k))


def _on_upright(cam: np.ndarray, record: dict, photo_size: tuple[int, int]) -> np.ndarray:
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
