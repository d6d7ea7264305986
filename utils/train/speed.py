"""How fast a fit runs, on what it learns nothing: the optimiser's kernel, torch.compile, the memory it peaks at."""
from __future__ import annotations

import torch


def optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; on a GPU the fused kernel (one launch for every tensor, not several per
    parameter)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


COMPILE_CHOICES = ("auto", "on", "off")


def compile_wanted(value: str, device: torch.device) -> bool:
    """torch_compile: on, off, or auto (on for CUDA; off on a CPU, where compiling takes minutes for no gain)."""
    if value not in COMPILE_CHOICES:
        raise ValueError(f"torch_compile must be one of {COMPILE_CHOICES}, got {value!r}")
    return value == "on" or (value == "auto" and device.type == "cuda")


def peak_memory_gib(device: torch.device) -> float | None:
    """The most GPU memory this process has held since the epoch began (None off CUDA)."""
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None
