"""Kaggle readiness: upload-ready folders, offline installs, and the chain on a /kaggle/input-shaped folder."""
import json
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.pipeline import kaggle
from utils.pipeline.runner import discover_steps, run_pipeline
from utils.pipeline.runs import is_step_complete


def test_code_dataset_holds_the_package_and_metadata(tmp_path):
    out = kaggle.build_code_dataset(tmp_path / "code", user="alice")
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/ecg-photo-reader-code" and meta["licenses"]
    assert (out / "utils" / "__init__.py").is_file() and (out / "utils" / "pipeline" / "profiles" / "kaggle.yaml").is_file()
    assert sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == \
        sorted(s.path.name for s in discover_steps(out / "notebooks"))
    assert not list(out.rglob("__pycache__"))


def test_runner_metadata_turns_the_gpu_on():
    from pathlib import Path

    meta = json.loads((Path(kaggle.REPO_ROOT) / "kaggle" / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is True and meta["code_file"] == "runner.ipynb"
    assert (Path(kaggle.REPO_ROOT) / "kaggle" / meta["code_file"]).is_file()


def test_wheels_are_found_and_offline_without_them_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "input" / "ecg-photo-reader-wheels").mkdir(parents=True)
    (tmp_path / "input" / "ecg-photo-reader-wheels" / "wfdb-4.1.2-py3-none-any.whl").write_bytes(b"")
    assert kaggle.find_wheels(tmp_path / "input") == tmp_path / "input" / "ecg-photo-reader-wheels"
    assert kaggle.ensure_packages(tmp_path / "input") == "all packages present"  # this environment has them
    monkeypatch.setattr(kaggle, "missing_modules", lambda: ["wfdb"])
    with pytest.raises(RuntimeError, match=r"missing packages \['wfdb'\] and no internet: attach the wheels"):
        kaggle.ensure_packages(tmp_path / "empty", online=False)
    seen = []
    monkeypatch.setattr(kaggle.subprocess, "run", lambda cmd, check: seen.append(cmd))
    assert "from" in kaggle.ensure_packages(tmp_path / "input", online=False)
    assert seen[0][-4:] == ["--no-index", "--find-links", str(tmp_path / "input" / "ecg-photo-reader-wheels"), "wfdb"]


@pytest.mark.slow
def test_wheels_download_for_kaggles_python(tmp_path):
    try:
        wheels = kaggle.download_wheels(tmp_path / "w", packages=["ttach==0.0.3"], python="3.11")
    except subprocess.CalledProcessError:
        pytest.skip("the package index cannot be reached")
    assert [w.name for w in wheels] == ["ttach-0.0.3-py3-none-any.whl"]
    assert json.loads((tmp_path / "w" / "dataset-metadata.json").read_text())["title"] == "ecg-photo-reader-wheels"


def _kaggle_input(root):
    """/kaggle/input as Kaggle lays it out: the competition (photos, labels, sample submission), a scan set, wheels."""
    from utils.synth.dataset import generate_dataset
    from utils.synth.generate import SynthSettings

    comp = root / "bhf-data-science-centre-ecg-challenge"
    generate_dataset(comp, SynthSettings(style="photo", page_width=440, page_height=340, photo_max_side=560),
                     n_train=12, n_test=4, workers=1, progress=False)
    for name in ("annotations", "synth.json", "test_labels.csv", "failures.csv"):  # Kaggle gives none of these
        p = comp / name
        subprocess.run(["rm", "-rf", str(p)], check=True)
    rng = np.random.default_rng(0)
    for cls in ("Normal Person ECG Images", "ECG Images of Myocardial Infarction Patients"):
        for i in range(3):
            d = root / "ecg-images-dataset" / cls
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{i}.jpg"), rng.integers(150, 255, (340, 440, 3), dtype=np.uint8))
    (root / "ecg-photo-reader-wheels").mkdir()
    (root / "ecg-photo-reader-wheels" / "placeholder-0.0-py3-none-any.whl").write_bytes(b"")
    return comp


@pytest.mark.slow
def test_chain_on_a_kaggle_shaped_input(tmp_path, monkeypatch):
    import yaml

    from utils.pipeline.config import PROFILE_DIR

    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    comp = _kaggle_input(tmp_path / "input")
    small = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    small.update(target="competition", stage1_scan_dirs="auto", synth_photo_train=0, synth_photo_test=0,
                 input_root=str(tmp_path / "input"), working_root=str(tmp_path / "working"))
    run = run_pipeline("kaggle", overrides=small)
    assert run.parent == tmp_path / "working" / "outputs" / "kaggle"
    for step in discover_steps(kaggle.REPO_ROOT / "notebooks"):
        assert is_step_complete(run / step.name) != step.optional, step.name
    sources = json.loads((run / "01_assemble" / "sources.json").read_text())["sources"]
    assert {s["root"] for s in sources} >= {str(comp), str(tmp_path / "input" / "ecg-images-dataset")}
    sub = pd.read_csv(run / "05_ensemble" / "submission.csv", dtype=str)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) and list(sub["id"]) == list(sample["id"])
