"""The pre-flight: each missing or wrong input one line before step 00, nothing created."""
import time

import pandas as pd
import pytest

from utils.pipeline.preflight import PreflightError
from utils.pipeline.runner import run_pipeline
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings

# the Kaggle profile's shape at the smoke profile's size: the competition as target, a backbone that needs weights
KAGGLE_LIKE = {"target": "competition", "backbone": "convnext_atto", "backbone_weights": "", "backbone_hub": False}


def _competition(root):
    generate_dataset(root, SynthSettings(style="photo", page_width=220, page_height=170, photo_max_side=280),
                     n_train=4, n_test=2, workers=1, progress=False)
    return root


def _run(tmp_path, **overrides):
    started = time.perf_counter()
    with pytest.raises(PreflightError) as err:
        run_pipeline("smoke", "00-06", {"output_root": str(tmp_path / "out"), "input_root": str(tmp_path / "input"),
                                        **KAGGLE_LIKE, **overrides}, run_name="pre")
    lines = str(err.value).splitlines()
    print(f"pre-flight refused in {time.perf_counter() - started:.1f} s")
    assert not (tmp_path / "out").exists(), "the pre-flight created something"
    return lines[0], [line.strip() for line in lines[1:]]


def test_each_missing_input_is_one_line_before_anything_is_made(tmp_path):
    (tmp_path / "input").mkdir()
    head, lines = _run(tmp_path, device="cuda")
    assert head == "the run cannot start; fix each of these first:"
    assert len(lines) == 3
    assert lines[0].startswith(f"competition data: no folder with sample_submission.csv under {tmp_path / 'input'}")
    assert "Add Input > Competitions > bhf-data-science-centre-ecg-challenge" in lines[0]
    assert lines[1].startswith("backbone weights: none for convnext_atto") and "make kaggle-weights" in lines[1]
    assert lines[2].startswith("GPU: device is 'cuda' but no GPU is visible")


def test_a_competition_without_labels_or_pictures_and_wrong_weights_are_named(tmp_path):
    comp = _competition(tmp_path / "input" / "competitions" / "bhf")
    for p in comp.glob("*.csv"):
        p.unlink() if p.name != "sample_submission.csv" else None
    for p in comp.rglob("*.jpg"):
        p.unlink()
    _, lines = _run(tmp_path, backbone_weights=str(tmp_path / "nowhere.safetensors"))
    assert lines[0].startswith("competition data: no labels CSV with an id column") and str(comp) in lines[0]
    assert lines[1].startswith(f"competition data: no pictures") and str(comp) in lines[1]
    assert lines[2] == f"backbone weights: {tmp_path / 'nowhere.safetensors'} does not exist (set by 'backbone_weights')"
    assert len(lines) == 3


def test_missing_packages_and_a_disk_too_small_are_named(tmp_path, monkeypatch):
    from utils.pipeline import preflight as pf

    comp = _competition(tmp_path / "input" / "bhf")
    assert len(pd.read_csv(comp / "train.csv")) == 4
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("numpy>=1.0\nno-such-package-here>=1.0\nscipy<0.1\n")
    monkeypatch.setattr(pf, "REQUIREMENTS", reqs)  # the file read, not the reading: the installed packages are real
    _, lines = _run(tmp_path, backbone_weights="none", disk_budget_gb=1e9, synth_scan_train=10 ** 9)
    assert lines[0].startswith("packages: no-such-package-here>=1.0, scipy<0.1 (have ")
    assert lines[1].startswith("disk: the run needs about ") and "GB free" in lines[1]
    assert len(lines) == 2


def test_a_run_with_its_inputs_passes_and_says_what_it_checked(tmp_path):
    from utils.core.config import resolve_config
    from utils.core.paths import resolve_paths
    from utils.pipeline.preflight import preflight

    _competition(tmp_path / "input" / "datasets" / "u" / "bhf")
    cfg = resolve_config("smoke", {"input_root": str(tmp_path / "input"), "output_root": str(tmp_path / "out"),
                                   **KAGGLE_LIKE, "backbone_weights": "none"})
    said = preflight(cfg, resolve_paths(cfg), ["00", "01", "03"], {tmp_path / "out": 6e8, tmp_path / "data": 4e8})
    assert said.startswith("pre-flight: inputs for steps 00 01 03 present; packages as required; no GPU")
    assert said.endswith("; 1.0 GB of disk needed at the peak, free")  # the output's and data_root's added up


def test_two_roots_on_one_disk_are_held_together_against_its_free_space(tmp_path):
    import shutil

    from utils.pipeline.preflight import check_disk

    free = shutil.disk_usage(tmp_path).free
    assert check_disk({tmp_path / "out": 0.4 * free, tmp_path / "data": 0.4 * free}) == []
    lines = check_disk({tmp_path / "out": 0.6 * free, tmp_path / "data" / "deeper": 0.6 * free})
    assert len(lines) == 1 and lines[0].startswith(f"disk: the run needs about {1.2 * free / 1e9:.1f} GB at its peak")
    assert not (tmp_path / "out").exists()
