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
        wheels = kaggle.download_wheels(tmp_path / "w", packages=["ttach==0.0.3"], python="3.11", user="alice")
    except subprocess.CalledProcessError:
        pytest.skip("the package index cannot be reached")
    assert [w.name for w in wheels] == ["ttach-0.0.3-py3-none-any.whl"]
    meta = json.loads((tmp_path / "w" / "dataset-metadata.json").read_text())
    assert meta["title"] == "ecg-photo-reader-wheels" and meta["id"] == "alice/ecg-photo-reader-wheels"


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
                 input_root=str(tmp_path / "input"), working_root=str(tmp_path / "working"), disk_budget_gb=20.0)
    run = run_pipeline("kaggle", overrides=small)
    log = (run / "pipeline.log").read_text()  # the budget was said before the first step
    assert log.index("budget of this configuration, before any work") < log.index("step 00_synthesize: running")
    assert "disk (estimate)" in log and "compute (estimate" in log and "cache roi_clahe" in log
    assert run.parent == tmp_path / "working" / "outputs" / "kaggle"
    for step in discover_steps(kaggle.REPO_ROOT / "notebooks"):
        assert is_step_complete(run / step.name) != step.optional, step.name
    sources = json.loads((run / "01_assemble" / "sources.json").read_text())["sources"]
    assert {s["root"] for s in sources} >= {str(comp), str(tmp_path / "input" / "ecg-images-dataset")}
    sub = pd.read_csv(run / "05_ensemble" / "submission.csv", dtype=str)
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) and list(sub["id"]) == list(sample["id"])


def test_uploads_are_whole_named_by_the_user_and_versioned(tmp_path):
    out = kaggle.build_code_dataset(tmp_path / "code", user="alice")
    version = (out / "code_version.txt").read_text().strip()
    assert len(version) == 16 and version == kaggle.code_version(out)
    with pytest.raises(ValueError, match="set KAGGLE_USER"):
        kaggle.build_code_dataset(tmp_path / "code2", user="")
    kernel = kaggle.build_kernel(tmp_path / "kernel", user="alice")
    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert meta["id"] == "alice/ecg-photo-reader-runner" and meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["enable_internet"] is False and (kernel / "runner.ipynb").is_file()
    assert set(meta["dataset_sources"]) == {f"alice/{t}" for t in (kaggle.CODE_TITLE, kaggle.WHEELS_TITLE,
                                                                    *kaggle.WEIGHTS_TITLES)}
    assert not any("USER" in s for s in meta["dataset_sources"])
    for folder, title in ((tmp_path / "w", kaggle.WHEELS_TITLE), (tmp_path / "c", "convnext-base-fb-in22k")):
        folder.mkdir()
        assert json.loads(kaggle.dataset_metadata(folder, "bob", title).read_text())["id"] == f"bob/{title}"


def test_the_runner_renews_its_copy_of_the_code_when_the_version_changes(tmp_path):
    code = kaggle.build_code_dataset(tmp_path / "input" / "ecg-photo-reader-code", user="alice")
    work = tmp_path / "working" / "ecg-photo-reader"
    assert "copied" in kaggle.sync_code(code, work) and (work / "utils" / "__init__.py").is_file()
    (work / "stale.txt").write_text("left by the old copy")
    assert "is current" in kaggle.sync_code(code, work) and (work / "stale.txt").exists()
    (code / "code_version.txt").write_text("a-newer-version\n")
    assert "(was " in kaggle.sync_code(code, work) and not (work / "stale.txt").exists()
    assert (work / "code_version.txt").read_text().strip() == "a-newer-version"


@pytest.mark.slow
def test_a_run_split_over_sessions_resumes_from_the_attached_output(tmp_path):
    """Session 1 trains one fold and pauses; its output, attached read-only as Kaggle attaches a notebook's output,
    is restored by session 2, which trains the other folds and submits; folds, OOF ids and submission ids are those
    of the whole run."""
    import os
    import shutil
    import stat

    from utils.core.session import SessionPaused

    work, attached = tmp_path / "working", tmp_path / "input" / "ecg-photo-reader-runner"
    base = {"working_root": str(work), "input_root": str(tmp_path / "input")}
    (tmp_path / "input").mkdir()
    run_pipeline("smoke", "00-03", base, run_name="kaggle")
    with pytest.raises(SessionPaused, match=r"paused: continue in a new session.*folds \[1, 2\] remain"):
        run_pipeline("smoke", "04", {**base, "folds_to_run": "0"}, run_name="kaggle")
    run = work / "outputs" / "smoke" / "kaggle"
    first = (run / "04_stage2" / "folds" / "fold0" / "result.json").read_text()
    assert not (run / "04_stage2" / "folds" / "fold0" / "last.pt").exists()
    attached.mkdir(parents=True)
    shutil.move(str(work / "outputs"), attached / "outputs")  # the session ends: its output becomes an input
    for root, dirs, files in os.walk(attached):
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IREAD)
    run_pipeline("smoke", "04-05", base, run_name="kaggle")  # a new session, all folds
    assert (run / "04_stage2" / "folds" / "fold0" / "result.json").read_text() == first  # not trained again
    manifest = pd.read_csv(run / "01_assemble" / "manifest.csv", dtype={"id": str})
    train = manifest[(manifest["stage"] == "II") & (manifest["split"] == "train")]
    test = manifest[(manifest["stage"] == "II") & (manifest["split"] == "test")]
    oof = pd.read_csv(run / "04_stage2" / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(train["id"]) and sorted(oof["fold"].unique()) == [0, 1, 2]
    folds = pd.read_csv(run / "01_assemble" / "folds.csv", dtype={"id": str})
    assert folds.equals(pd.read_csv(attached / "outputs" / "smoke" / "kaggle" / "01_assemble" / "folds.csv",
                                    dtype={"id": str}))
    sub = pd.read_csv(run / "05_ensemble" / "submission.csv", dtype=str)
    assert list(sub["id"]) == [i.split(":", 1)[-1] for i in test["id"]]
