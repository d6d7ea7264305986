"""The one progress bar: tqdm's widget where a person sits at a notebook, its text bar in batch runs.

tqdm.auto draws an ipywidgets bar inside any Jupyter kernel where ipywidgets is installed (Kaggle's image has it):
in the kernels papermill runs for the pipeline that bar is invisible in the runner's log. The runner marks its
kernels as batch (ECG_BATCH), and so does Kaggle's "Save & Run All" (KAGGLE_KERNEL_RUN_TYPE=Batch).
"""
from __future__ import annotations

import os


def is_batch() -> bool:
    """Nobody at the kernel: pictures and text, not menus and widgets."""
    return bool(os.environ.get("ECG_BATCH")) or os.environ.get("KAGGLE_KERNEL_RUN_TYPE") == "Batch"


if is_batch():
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["tqdm", "is_batch"]
