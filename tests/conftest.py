from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from utils.synth.waveform import LEADS, simulate

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

    from utils.ensemble.predictor import package_model
    from utils.ensemble.vote import Calibration
    from utils.preprocess.cache import PrepSettings

    ckpts = []
    for k in range(2):
        torch.manual_seed(k)
        m = timm.create_model("test_convnext", num_classes=5)
        state = {"model": m.state_dict(), "settings": {"backbone": "test_convnext", "image_height": 64,
                                                       "image_width": 96},
                 "data_config": {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}}
        torch.save(state, tmp_path / f"fold{k}.pt")
        ckpts.append(tmp_path / f"fold{k}.pt")
    return package_model(tmp_path / "model.pt", ckpts, PrepSettings(long_side=128), "soft",
                         Calibration((1.5,) * 5, (0.5,) * 5))


@pytest.fixture
def signal_package(tmp_path, package):
    """The same package with a signal reader: the 1D network trained briefly on 64 simulated page views, blended at
    0.5 on every label."""
    from utils.digitise.reader import reader_entry, train_reader

    pkg = torch.load(package, weights_only=True)
    torch.set_num_threads(1)
    pkg["signal"] = reader_entry(train_reader(64, 1, 0), [0.5] * 5, [0.5] * 5, 64)
    torch.save(pkg, tmp_path / "model-signal.pt")
    return tmp_path / "model-signal.pt"


# a few rows of PTB-XL's statement table: enough to map these records' codes to superclasses
STATEMENTS = "code,diagnostic,diagnostic_class\nNORM,1,NORM\nIMI,1,MI\nLVH,1,HYP\nCRBBB,1,CD\nNDT,1,STTC\nAFIB,,\nSR,,\n"
CODES = ["{'NORM': 100.0, 'SR': 0.0}", "{'IMI': 100.0, 'SR': 0.0}", "{'AFIB': 100.0, 'NDT': 50.0}",
         "{'LVH': 100.0, 'SR': 0.0}", "{'CRBBB': 100.0, 'IMI': 50.0}", "{'NORM': 100.0, 'SR': 0.0}"]


def ptbxl_subset(folder: Path, n: int = len(CODES), first_id: int = 1, patients: list[int] | None = None) -> Path:
    """A folder laid out like ptbxl-more: ptbxl_rows.csv, scp_statements.csv, records100/*_lr (100 Hz), with
    simulated signals; ecg ids from first_id, patient ids 100 + i unless given."""
    (folder / "records100").mkdir(parents=True)
    rows = []
    for i in range(n):
        ecg_id = first_id + i
        sig = simulate({}, np.random.default_rng(ecg_id), fs=100).signals
        wfdb.wrsamp(f"{ecg_id:05d}_lr", fs=100, units=["mV"] * 12, sig_name=list(LEADS),
                    p_signal=sig.T.astype(np.float64), fmt=["16"] * 12, write_dir=str(folder / "records100"))
        rows.append({"ecg_id": ecg_id, "patient_id": patients[i] if patients else 100 + i,
                     "scp_codes": CODES[i % len(CODES)], "strat_fold": 1, "filename_lr": f"records100/{ecg_id:05d}_lr"})
    pd.DataFrame(rows).to_csv(folder / "ptbxl_rows.csv", index=False)
    (folder / "scp_statements.csv").write_text(STATEMENTS)
    return folder
