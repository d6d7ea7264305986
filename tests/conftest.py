from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ECG_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_notebook(path: Path, cells: list[tuple[str, str, list[str]]]) -> Path:
    """Write a notebook of (kind, source, tags) cells, as the project's notebooks are laid out."""
    nb = nbformat.v4.new_notebook()
    for kind, source, tags in cells:
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"development data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def package(tmp_path):
    """A two-fold ensemble package of test-sized random models."""
    import timm

    from utils.cache import PrepSettings
    from utils.predict import package_model

    ckpts = []
    for k in range(2):
        torch.manual_seed(k)
        m = timm.create_model("test_convnext", num_classes=5)
        state = {"model": m.state_dict(), "settings": {"backbone": "test_convnext", "image_height": 64,
                                                       "image_width": 96},
                 "data_config": {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}}
        torch.save(state, tmp_path / f"fold{k}.pt")
        ckpts.append(tmp_path / f"fold{k}.pt")
    return package_model(tmp_path / "model.pt", ckpts, PrepSettings(long_side=128), "soft", [1.5] * 5, [0.5] * 5)
