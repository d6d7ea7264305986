"""What training optimises and watches: masked BCE with the paper's pos_weight, the warm-up + cosine schedule,
early stopping on a metric that should rise."""
from __future__ import annotations

import math

import numpy as np
import torch


def pos_weight(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The paper's weighting: the inverse of each label's positive rate among known labels."""
    y = np.nan_to_num(np.asarray(y, float))
    known = np.asarray(mask, float)
    rate = (y * known).sum(0) / np.maximum(known.sum(0), 1)
    return 1.0 / np.clip(rate, 1e-3, 1.0)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with pos_weight, averaged over known labels only: unknown labels give no gradient."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target, reduction="none",
                                                               pos_weight=weight)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


# Written here rather than timm's CosineLRScheduler: the paper's schedule is transformers'
# get_cosine_schedule_with_warmup, whose cosine runs on for num_cycles (timm restarts its cycles instead), and
# transformers is not a dependency. Six lines, held to known values by the tests.
def cosine_lambda(total_steps: int, warmup_steps: int, num_cycles: float = 0.5):
    """Linear warm-up, then lambda = 0.5 (1 + cos(2 pi num_cycles progress)), as in the paper."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(2 * math.pi * num_cycles * progress)))
    return f


class EarlyStopping:
    """Stop after `patience` epochs without improvement of a metric that should rise."""

    def __init__(self, patience: int, best: float = -math.inf, bad: int = 0):
        self.patience, self.best, self.bad = patience, best, bad

    def step(self, value: float) -> tuple[bool, bool]:
        """(improved, stop)."""
        if not math.isnan(value) and value > self.best:
            self.best, self.bad = value, 0
            return True, False
        self.bad += 1
        return False, self.bad >= self.patience
