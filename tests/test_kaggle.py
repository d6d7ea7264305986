"""Kaggle readiness: upload-ready folders, offline installs, and the chain on a /kaggle/input-shaped folder."""
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from packaging.version import Version

from utils.pipeline import kaggle, wheels
from utils.pipeline.runner import discover_steps, run_pipeline
from utils.core.runs import is_step_complete


def test_code_dataset_holds_the_package_and_metadata(tmp_path):
    out = kaggle.build_code_dataset(tmp_path / "code", user="alice")
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/ecg-photo-reader-code" and meta["licenses"] == [{"name": "other"}]
    assert (out / "docs" / "gpu-check").is_dir()  # the measured GPU share travels with the code (the budget reads it)
    assert {"kaggle.md", "reference.md", "results.md"} <= {p.name for p in (out / "docs").glob("*.md")}
    with pytest.raises(ValueError, match=r"licence 'MIT' is not one the Kaggle CLI documents"):
        kaggle.dataset_metadata(tmp_path, "alice", "x", "MIT")
    assert (out / "utils" / "__init__.py").is_file() and (out / "utils" / "core" / "profiles" / "kaggle.yaml").is_file()
    assert sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == \
        sorted(s.path.name for s in discover_steps(out / "notebooks"))
    assert not list(out.rglob("__pycache__"))


def test_runner_metadata_turns_the_gpu_on():
    from pathlib import Path

    meta = json.loads((Path(kaggle.REPO_ROOT) / "kaggle" / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is True and meta["code_file"] == "runner.ipynb"
    assert (Path(kaggle.REPO_ROOT) / "kaggle" / meta["code_file"]).is_file()


def test_wheels_are_found_at_any_mount_depth_and_offline_without_them_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "input" / "datasets" / "alice" / "ecg-photo-reader-wheels"  # Kaggle's newer mount layout
    folder.mkdir(parents=True)
    (folder / "wfdb-4.1.2-py3-none-any.whl").write_bytes(b"")
    assert kaggle.find_wheels(tmp_path / "input") == folder
    assert kaggle.ensure_packages(tmp_path / "input") == "all packages present"  # this environment has them
    monkeypatch.setattr(kaggle, "unmet_requirements", lambda: ["wfdb>=4.1"])
    with pytest.raises(RuntimeError, match=r"missing packages \['wfdb>=4.1'\] and no internet: attach the wheels"):
        kaggle.ensure_packages(tmp_path / "empty", online=False)
    monkeypatch.setattr(kaggle, "is_online", lambda: False)  # asked, as on Kaggle with the internet off
    with pytest.raises(RuntimeError, match=r"and no internet"):
        kaggle.ensure_packages(tmp_path / "empty")
    seen = []
    monkeypatch.setattr(kaggle.subprocess, "run", lambda cmd, check: seen.append(cmd))
    assert "from" in kaggle.ensure_packages(tmp_path / "input", online=False)
    assert seen[0][-5:] == ["--no-index", "--find-links", str(folder), "-r", str(kaggle.REQUIREMENTS)]


def test_unmet_requirements_name_missing_and_wrong_versions(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# a comment\npytest>=1  # installed here\nno-such-package-xyz>=1\nnumpy<1\n"
                    "wfdb>=1; python_version < '3'\n")
    unmet = wheels.unmet_requirements(reqs)
    assert unmet[0] == "no-such-package-xyz>=1" and unmet[1].startswith("numpy<1 (have ") and len(unmet) == 2


def test_the_image_list_and_requirements_are_read_strictly(tmp_path):
    pins = wheels.read_pins()
    assert pins["torch"] and pins["albumentations"] == "2.0.8" and "ultralytics" not in pins
    bad = tmp_path / "image.txt"
    bad.write_text("torch==2.10.0\nnumpy>=2\n")
    with pytest.raises(wheels.WheelsError, match=r"image.txt, line 2: 'numpy>=2' is not name==version"):
        wheels.read_pins(bad)
    bad.write_text("torch>=2,,\n")
    with pytest.raises(wheels.WheelsError, match=r"line 1"):
        wheels.read_requirements(bad)


def test_the_tree_walk_stops_below_what_the_image_holds(tmp_path):
    reqs, image = tmp_path / "requirements.txt", tmp_path / "image.txt"
    reqs.write_text("alpha>=1\nbeta>=2\ngamma>=3\n")
    image.write_text("beta==2.5\ngamma==2.0\ndelta==1.0\n")
    resolved = {"alpha": ("1.1", ["epsilon>=1", "delta>=1", "zeta; python_version < '3.12'"]),
                "beta": ("2.5", ["eta"]), "gamma": ("3.1", []), "epsilon": ("1.0", ["beta>=2"]), "zeta": ("1", []),
                "delta": ("1.0", [])}
    need = wheels.missing_from_image(resolved, "3.12", reqs, image)
    assert need == {"alpha": "1.1", "epsilon": "1.0", "gamma": "3.1"}  # gamma: the image's 2.0 is too old
    assert "zeta" in wheels.missing_from_image(resolved, "3.11", reqs, image)  # its marker holds on 3.11
    resolved["alpha"] = ("0.9", [])
    with pytest.raises(wheels.WheelsError, match=r"alpha: pip resolved 0.9, which alpha>=1 does not allow"):
        wheels.missing_from_image(resolved, "3.12", reqs, image)


def test_an_exact_pin_is_carried_even_where_the_image_has_it(tmp_path):
    """A release of the image that drops or moves beta would stop the first cell offline: beta==2.5 travels, with the
    part of its tree the image does not hold; a range the image satisfies (gamma) does not."""
    reqs, image = tmp_path / "requirements.txt", tmp_path / "image.txt"
    reqs.write_text("beta==2.5\ngamma>=3\n")
    image.write_text("beta==2.5\ngamma==3.2\ntheta==1.0\n")
    resolved = {"beta": ("2.5", ["eta>=1", "theta==1.0"]), "gamma": ("3.2", ["iota"]), "eta": ("1.4", []),
                "theta": ("1.0", []), "iota": ("1", [])}
    assert wheels.missing_from_image(resolved, "3.12", reqs, image) == {"beta": "2.5", "eta": "1.4"}


def test_a_source_only_package_taken_at_an_old_wheel_is_refused_by_name(tmp_path):
    reqs, image, folder = tmp_path / "requirements.txt", tmp_path / "image.txt", tmp_path / "wheels"
    reqs.write_text("grad-cam>=1.5.4,<2\ntorch>=2.1\n")
    image.write_text("torch==2.10.0\n")
    folder.mkdir()
    wheels.stub_wheel(folder, "grad-cam", "1.0.0")  # what `pip download --only-binary=:all: grad-cam` takes
    with pytest.raises(wheels.WheelsError, match=r"grad-cam: no wheel in .* installs on Python 3.12 with "
                                                 r"grad-cam<2,>=1.5.4 \(found 1.0.0\)"):
        wheels.check_wheels(folder, ("3.12",), reqs, image)
    wheels.stub_wheel(folder, "grad-cam", "1.5.7")
    wheels.check_wheels(folder, ("3.12", "3.11"), reqs, image)


def test_offline_resolution_names_the_package_the_folder_lacks(tmp_path):
    reqs, image, folder = tmp_path / "requirements.txt", tmp_path / "image.txt", tmp_path / "wheels"
    reqs.write_text("ttach>=0.0.3\ntorch>=2.1\n")
    image.write_text("torch==2.10.0\n")
    folder.mkdir()
    with pytest.raises(wheels.WheelsError, match=r"ttach"):
        wheels.resolve_offline(folder, "3.12", reqs, image)
    wheels.stub_wheel(folder, "ttach", "0.0.3")
    assert wheels.resolve_offline(folder, "3.12", reqs, image) == {"ttach": "0.0.3", "torch": "2.10.0"}


@pytest.fixture(scope="session")
def kaggle_wheels(tmp_path_factory):
    """The wheels dataset as `make kaggle-wheels` builds it: dist/kaggle-wheels when built, else built here."""
    built = kaggle.REPO_ROOT / "dist" / "kaggle-wheels"
    if (built / "wheels.json").is_file():
        return built
    if not kaggle.is_online():
        pytest.skip("the package index cannot be reached to build the wheels")
    out = tmp_path_factory.mktemp("w") / "kaggle-wheels"
    wheels.build_wheels(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("python", wheels.KAGGLE_PYTHONS)
def test_the_requirements_install_offline_from_the_wheels_on_kaggles_pythons(kaggle_wheels, python):
    got = wheels.resolve_offline(kaggle_wheels, python)
    pins = wheels.read_pins()
    new = {n: v for n, v in got.items() if n not in pins}
    assert {"ultralytics", "ultralytics-platform", "grad-cam", "ttach", "wfdb", "iterative-stratification"} <= set(new)
    assert Version(new["grad-cam"]) >= Version("1.5.4")
    manifest = json.loads((kaggle_wheels / "wheels.json").read_text())["pythons"][python]
    assert set(new) <= set(manifest)  # nothing installed that the build did not choose


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

    from utils.core.config import PROFILE_DIR

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
    of the whole run. The synthetic sets lie outside the saved output (data_root: Kaggle's /kaggle/temp) and are
    gone in session 2, whose step 05 reads pictures: step 00 draws them again first, the same pictures."""
    import os
    import shutil
    import stat

    from utils.core.session import SessionPaused

    work = tmp_path / "working"
    attached = tmp_path / "input" / "notebooks" / "alice" / "ecg-photo-reader-runner"  # Kaggle's newer mounts
    scratch = tmp_path / "temp" / "data"
    base = {"working_root": str(work), "input_root": str(tmp_path / "input"), "data_root": str(scratch)}
    (tmp_path / "input").mkdir()
    run_pipeline("smoke", "00-03", base, run_name="kaggle")
    drawn = json.loads((work / "outputs" / "smoke" / "kaggle" / "00_synthesize" / "step.json").read_text())["drawn"]
    assert drawn and all(Path(d).parent == scratch for d in drawn) and not (work / "outputs" / "data").exists()
    before = {p.relative_to(scratch): p.read_bytes() for p in scratch.glob("synth-*/**/*.jpg")}
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
    shutil.rmtree(tmp_path / "temp")  # a new session: /kaggle/temp starts empty
    run_pipeline("smoke", "04-05", base, run_name="kaggle")  # a new session, all folds
    assert {p.relative_to(scratch): p.read_bytes() for p in scratch.glob("synth-*/**/*.jpg")} == before  # the same
    assert not list(scratch.glob("detector-*"))  # step 02 is done: its detector's pictures are not drawn again
    assert (run / "00_synthesize.prev-1" / "step.json").is_file()  # the first session's record kept
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


def test_wheels_for_another_python_are_refused_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "x-1.0-cp399-cp399-manylinux_2_17_x86_64.whl").write_bytes(b"")
    monkeypatch.setattr(kaggle, "unmet_requirements", lambda: ["x>=1"])
    with pytest.raises(RuntimeError, match=r"1 wheels in .* do not install on this Python 3\.\d+ \(e\.g\. x-1\.0-cp399"):
        kaggle.ensure_packages(wheels=tmp_path)


def test_attached_weights_are_found_by_their_dataset_names_and_a_set_key_wins(tmp_path):
    from utils.core.paths import Paths, dataset_slug
    from utils.core.config import resolve_config
    from utils.pipeline.runner import attached_weights

    owner = tmp_path / "input" / "datasets" / "alice"
    for folder, name in (("convnext-base-fb-in22k", "model.safetensors"), ("yolov8n", "yolov8n.pt"),
                         ("sam-vit-b", "sam_vit_b_01ec64.pth"), ("unrelated", "yolov8n.pt")):
        (owner / folder).mkdir(parents=True)
        (owner / folder / name).write_bytes(b"w")
    paths = Paths(tmp_path / "input", tmp_path, tmp_path / "out", tmp_path / "data")
    assert dataset_slug("convnext_base.fb_in22k") == "convnext-base-fb-in22k"
    found = attached_weights(resolve_config("kaggle"), paths)
    assert found == {"backbone_weights": str(owner / "convnext-base-fb-in22k"),
                     "yolo_weights": str(owner / "yolov8n" / "yolov8n.pt"),
                     "sam_checkpoint": str(owner / "sam-vit-b" / "sam_vit_b_01ec64.pth")}
    assert attached_weights(resolve_config("kaggle", {"backbone_weights": "none", "sam_model_type": "vit_h"}),
                            paths) == {"yolo_weights": found["yolo_weights"]}


@pytest.mark.slow
def test_the_runner_notebook_finds_the_code_deep_and_prints_the_budget_creating_nothing(tmp_path):
    """The runner as Kaggle runs it, on Kaggle's newer mount layout, with budget_only: nothing written but its copy."""
    import os

    import papermill as pm

    inputs, working = tmp_path / "input", tmp_path / "working"
    kaggle.build_code_dataset(inputs / "datasets" / "alice" / "ecg-photo-reader-code", user="alice")
    working.mkdir()
    env = {"ECG_KAGGLE_INPUT": str(inputs), "ECG_KAGGLE_WORKING": str(working)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(kaggle.REPO_ROOT / "kaggle" / "runner.ipynb"), str(tmp_path / "runner.ipynb"),
                            parameters={"profile": "smoke", "budget_only": True}, kernel_name="python3",
                            cwd=str(working), progress_bar=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = (tmp_path / "runner.ipynb").read_text()
    assert "all packages present" in text and "creates nothing" in text and "compute (estimate" in text
    assert sorted(p.name for p in working.iterdir()) == ["ecg-photo-reader"]  # its code copy, no outputs


@pytest.mark.parametrize("layout", ["code", "datasets/alice/code", "a/b/c/code", "none", "zip"])
def test_every_notebook_finds_the_code_as_the_runner_does(tmp_path, layout):
    """The runner and each step notebook open with the one code finder: the attached code at any of Kaggle's mount
    depths (a step notebook opened by itself on Kaggle included), else one line naming what to attach."""
    import os
    import sys

    import nbformat

    from utils.pipeline.cells import CODE_FINDER, PRELUDE, RUNNER, prelude_index

    runner = nbformat.read(str(RUNNER), as_version=4)
    assert runner.cells[prelude_index(runner)].source.startswith(CODE_FINDER) and PRELUDE.startswith(CODE_FINDER)
    inputs, cwd = tmp_path / "input", tmp_path / "working"
    cwd.mkdir()
    if layout == "zip":
        (inputs / "code").mkdir(parents=True)
        (inputs / "code" / "utils.zip").write_bytes(b"PK")
    elif layout != "none":
        (inputs / layout / "utils").mkdir(parents=True)
        (inputs / layout / "utils" / "__init__.py").write_text("")
    env = {**os.environ, "ECG_KAGGLE_INPUT": str(inputs)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", CODE_FINDER + "\nprint(code)"], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if layout in ("none", "zip"):
        assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(f"no code under {inputs}")
        assert ("utils.zip is there unextracted" in done.stderr) == (layout == "zip")
    else:
        assert done.returncode == 0 and done.stdout.strip() == str(inputs / layout)


def test_the_rehearsal_fetches_only_what_the_file_pattern_names(tmp_path):
    """`kaggle kernels output --file-pattern`, as the README fetches the submission: a regular expression searched in
    each file's path in the output; nothing matching is a failure, not an empty folder."""
    from utils.pipeline.rehearsal import RehearsalFailed, fetch

    working = tmp_path / "working"
    for rel in ("outputs/kaggle/run/05_ensemble/submission.csv", "outputs/kaggle/run/05_ensemble/model.pt",
                "outputs/kaggle/run/02_preprocess/cache/roi_clahe/pack-000.zip"):
        (working / rel).parent.mkdir(parents=True, exist_ok=True)
        (working / rel).write_text(rel)
    fetch(working, tmp_path / "out", r"05_ensemble/submission\.csv$")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()] == [
        "outputs/kaggle/run/05_ensemble/submission.csv"]
    with pytest.raises(RehearsalFailed, match="no file of the output matches"):
        fetch(working, tmp_path / "none", r"nothing\.csv$")


def test_the_rehearsal_names_a_disk_too_small_for_its_image_and_what_earlier_images_hold(tmp_path):
    """The stand-in image is 8 GB: a shortfall is said before pip starts, with the images earlier rehearsals left."""
    import shutil

    from utils.pipeline.rehearsal import RehearsalFailed, check_free

    old = tmp_path / "2026-01-01-000000" / "stand-in-1" / "image" / "lib"
    old.mkdir(parents=True)
    (old / "libtorch.so").write_bytes(b"\0" * 3_000_000)
    new = tmp_path / "2026-01-02-000000" / "stand-in-1"
    new.mkdir(parents=True)
    free = shutil.disk_usage(new).free / 1e9
    assert abs(check_free(new, need_gb=0.0) - free) < 1.0
    with pytest.raises(RehearsalFailed) as err:
        check_free(new, need_gb=free + 1e6)
    msg = str(err.value)
    assert str(new) in msg and "1 image(s) of earlier rehearsals hold 0.0 GB" in msg and str(old.parent) in msg
