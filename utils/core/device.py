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
