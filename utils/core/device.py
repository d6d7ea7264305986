"""The device and the one mixed-precision rule that training, inference and the benchmarks share.

bf16 only where the hardware has it (compute capability 8.0 and newer: A100, H100, L4, ...); below that (a T4 is 7.5)
fp16 with a gradient scaler. `torch.cuda.is_bf16_supported()` is not the test: it also answers True where bf16 is
only emulated (its `including_emulation` argument defaults to True), which would run a T4 in slow emulated bf16
with no scaler.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    name: str                       # fp32, fp16 or bf16
    dtype: torch.dtype | None       # autocast dtype; None: full precision
    scaler: bool                    # fp16 needs a gradient scaler

    @property
    def enabled(self) -> bool:
        return self.dtype is not None


FP32 = Precision("fp32", None, False)
FP16 = Precision("fp16", torch.float16, True)
BF16 = Precision("bf16", torch.bfloat16, False)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def precision_for(capability: tuple[int, int] | None, amp: bool = True) -> Precision:
    """The rule, on a CUDA compute capability (None: no CUDA device)."""
    if not amp or capability is None:
        return FP32
    return BF16 if tuple(capability) >= (8, 0) else FP16


def device_precision(device: torch.device, amp: bool = True) -> Precision:
    """The rule applied to a device: mixed precision on CUDA only."""
    if device.type != "cuda":
        return FP32
    return precision_for(torch.cuda.get_device_capability(device), amp)


# Dense peak TFLOP/s from the vendors' datasheets: tensor-core fp16/bf16 (no sparsity) and plain fp32.
PEAKS = {"T4": {"fp16": 65.0, "fp32": 8.1}, "V100": {"fp16": 125.0, "fp32": 15.7},
         "A10": {"fp16": 125.0, "bf16": 125.0, "fp32": 31.2}, "L4": {"fp16": 121.0, "bf16": 121.0, "fp32": 30.3},
         "A100": {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5},
         "H100": {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0}, "H200": {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0}}


def peak_tflops(name: str, precision: str) -> float | None:
    for key in sorted(PEAKS, key=len, reverse=True):  # A100 before A10
        peaks = PEAKS[key]
        if key in str(name).upper().replace("NVIDIA ", ""):
            return peaks.get(precision, peaks.get("fp16") if precision == "bf16" else None)
    return None


def forward_flops(model, size: tuple[int, int], device) -> float:
    """FLOPs of one image's forward pass, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size, device=device))
    model.train()
    return float(counter.get_total_flops())
