"""The runner: order, failure messages, resume, --force, run naming."""
import json
from pathlib import Path

import pytest

from tests.conftest import make_notebook
from utils.core.config import ConfigError
from utils.pipeline.runner import StepFailed, discover_steps, main, run_pipeline, select_steps
from utils.core.runs import RunError, is_step_complete

PARAMS = 'profile: str = "kaggle"  # configuration profile\nrun_dir: str = ""  # run folder\nseed: int = 42  # seed\n'


def _ok_notebook(folder: Path, name: str, draws: bool = False) -> Path:
    """A step that records one output; `draws`: it also draws a folder under data_root, as step 00 draws its sets."""
    body = (f'import utils\nstep = utils.start_step("{name}", globals())\n'
            '(step.dir / "value.txt").write_text(str(step.cfg.seed))\n'
            '(step.dir / "root.txt").write_text(str(step.paths.working_root))\n'
            'counter = step.run_dir / "executions.txt"\n'
            f'counter.write_text(counter.read_text() + "{name}\\n" if counter.exists() else "{name}\\n")\n'
            'drawn = step.paths.data_root / "set"\n'
            + ('drawn.mkdir(parents=True, exist_ok=True)\n(drawn / "picture.txt").write_text("drawn")\n' if draws else '')
            + f'utils.finish_step(step, ["value.txt"], drawn=[drawn] if {draws} else [])')
    return make_notebook(folder / f"{name}.ipynb", [("markdown", f"# {name}", []),
                                                    ("code", PARAMS, ["parameters"]), ("code", body, [])])


def _failing_notebook(folder: Path, name: str) -> Path:
    return make_notebook(folder / f"{name}.ipynb", [
        ("code", PARAMS, ["parameters"]), ("code", "x = 1", []),
        ("code", "raise ValueError('the labels file has no id column')", [])])


@pytest.fixture
def chain(tmp_path):
    nbs = tmp_path / "nbs"
    _ok_notebook(nbs, "00_first")
    _ok_notebook(nbs, "01_second")
    return nbs


def _run(tmp_path, nbs, **kw):
    kw.setdefault("overrides", {})
    kw["overrides"] = {"working_root": str(tmp_path / "work"), **kw["overrides"]}
    return run_pipeline("smoke", notebook_dir=nbs, **kw)


def test_steps_are_discovered_and_selected(chain):
    steps = discover_steps(chain)
    assert [s.id for s in steps] == ["00", "01"]
    assert [s.id for s in select_steps(steps, "01-")] == ["01"]
    assert [s.id for s in select_steps(steps, "00,01")] == ["00", "01"]
    with pytest.raises(ConfigError, match="no notebook 05_"):
        select_steps(steps, "05")


def test_optional_notebooks_run_only_when_named(tmp_path, chain):
    import json

    nb = json.loads((chain / "01_second.ipynb").read_text())
    nb["metadata"]["pipeline"] = {"optional": True}
    (chain / "01_second.ipynb").write_text(json.dumps(nb))
    steps = discover_steps(chain)
    assert [s.optional for s in steps] == [False, True]
    assert [s.id for s in select_steps(steps, None)] == ["00"]
    assert [s.id for s in select_steps(steps, "00-01")] == ["00"]
    assert [s.id for s in select_steps(steps, "01")] == ["01"]
    assert [s.id for s in select_steps(steps, "00,01")] == ["00", "01"]
    (chain / "01_second.ipynb").write_text("{not json")
    with pytest.raises(ConfigError, match="01_second.ipynb cannot be read"):
        discover_steps(chain)


def test_the_ablations_notebook_is_optional():
    from utils.core.paths import REPO_ROOT

    steps = {s.id: s for s in discover_steps(REPO_ROOT / "notebooks")}
    assert steps["07"].optional and not any(s.optional for k, s in steps.items() if k != "07")


def test_chain_runs_in_order_and_records_everything(tmp_path, chain):
    run = _run(tmp_path, chain, overrides={"seed": 11})
    assert run == tmp_path / "work" / "outputs" / "smoke" / "run-001"
    assert (run / "executions.txt").read_text() == "00_first\n01_second\n"
    assert (run / "00_first" / "value.txt").read_text() == "11"
    # keys the notebook does not declare still come from the run's configuration
    assert (run / "00_first" / "root.txt").read_text() == str(tmp_path / "work")
    for step in ("00_first", "01_second"):
        assert is_step_complete(run / step)
        executed = json.loads((run / step / f"{step}.ipynb").read_text())
        injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert "seed = 11" in "".join(injected[0]["source"])
        assert (run / step / "log.txt").exists()
    assert "seed: 11" in (run / "config.yaml").read_text()
    assert (run.parent / "latest").resolve() == run


def test_failure_names_notebook_and_cell_and_keeps_earlier_steps(tmp_path, chain):
    _failing_notebook(chain, "01_second")
    with pytest.raises(StepFailed) as err:
        _run(tmp_path, chain)
    msg = str(err.value)
    assert "step 01_second (01_second.ipynb) failed in cell 3 (counting from 1, execution count 4)" in msg
    assert "ValueError: the labels file has no id column" in msg
    assert "cell source: raise ValueError" in msg
    run = tmp_path / "work" / "outputs" / "smoke" / "run-001"
    assert is_step_complete(run / "00_first") and not is_step_complete(run / "01_second")
    assert (run / "01_second" / "01_second.ipynb").exists()


def test_rerun_resumes_skipping_complete_steps(tmp_path, chain):
    _failing_notebook(chain, "01_second")
    with pytest.raises(StepFailed):
        _run(tmp_path, chain)
    _ok_notebook(chain, "01_second")  # the cause is fixed
    run = _run(tmp_path, chain)
    assert run.name == "run-001"
    assert (run / "executions.txt").read_text() == "00_first\n01_second\n"  # 00 did not run twice


def test_a_new_session_draws_again_only_what_a_step_still_to_run_reads(tmp_path, caplog):
    """Kaggle keeps /kaggle/working, not /kaggle/temp: the sets step 00 drew there are gone in the next session, and
    step 00 runs again only when a step still to run opens its pictures (Stage II alone does not)."""
    import shutil

    nbs = tmp_path / "nbs"
    _ok_notebook(nbs, "00_synthesize", draws=True)
    _ok_notebook(nbs, "02_preprocess")  # reads step 00's pictures (utils.core.runs.READS_PICTURES)
    _ok_notebook(nbs, "04_stage2")  # reads only the cache
    over = {"data_root": str(tmp_path / "temp" / "data")}
    run = _run(tmp_path, nbs, overrides=over)
    drawn, executions = tmp_path / "temp" / "data" / "set", run / "executions.txt"
    assert json.loads((run / "00_synthesize" / "step.json").read_text())["drawn"] == [str(drawn)]
    shutil.rmtree(tmp_path / "temp")  # a new session
    (run / "04_stage2" / "step.json").unlink()  # Stage II still to run
    with caplog.at_level("INFO", logger="utils.pipeline"):
        _run(tmp_path, nbs, overrides=over)
    assert executions.read_text() == "00_synthesize\n02_preprocess\n04_stage2\n04_stage2\n" and not drawn.exists()
    assert "no step still to run reads them" in caplog.text
    (run / "02_preprocess" / "step.json").unlink()  # killed mid-step 02: it reads the pictures
    caplog.clear()
    with caplog.at_level("INFO", logger="utils.pipeline"):
        _run(tmp_path, nbs, overrides=over, steps="02")  # step 00 not named: it runs all the same, before 02
    assert executions.read_text().endswith("04_stage2\n00_synthesize\n02_preprocess\n")
    assert (drawn / "picture.txt").is_file() and (run / "00_synthesize.prev-1" / "step.json").is_file()
    assert f"1 folder(s) it drew are gone ({drawn}) and 02_preprocess will read them: drawing them again" in caplog.text


def test_force_reruns_and_keeps_previous_outputs(tmp_path, chain):
    run = _run(tmp_path, chain)
    _run(tmp_path, chain, force=True, steps="01")
    assert (run / "executions.txt").read_text() == "00_first\n01_second\n01_second\n"
    assert (run / "01_second.prev-1" / "value.txt").exists()


def test_runs_are_never_reused_with_other_settings(tmp_path, chain):
    first = _run(tmp_path, chain, run_name="exp")
    with pytest.raises(RunError, match=r"other settings \(seed: 42 -> 5\)"):
        _run(tmp_path, chain, run_name="exp", overrides={"seed": 5})
    assert _run(tmp_path, chain, overrides={"seed": 5}).name == "run-001"  # a new auto-named run
    assert _run(tmp_path, chain, new_run=True).name == "run-002"
    assert first.name == "exp"


def test_a_run_made_by_another_simulator_is_not_reopened(tmp_path, chain, caplog):
    import logging

    from utils.core.atomic import atomic_write_json
    from utils.core.versions import SYNTH_VERSION

    first = _run(tmp_path, chain)
    assert json.loads((first / "versions.json").read_text()) == {"synth": SYNTH_VERSION}
    assert _run(tmp_path, chain).name == "run-001"  # same settings, same simulator: reopened
    atomic_write_json(first / "versions.json", {"synth": SYNTH_VERSION - 1})  # as if made before the change
    with caplog.at_level(logging.INFO, logger="utils.runs"):
        second = _run(tmp_path, chain)
    assert second.name == "run-002" and (second / "executions.txt").read_text() == "00_first\n01_second\n"
    assert f"other code (synth: {SYNTH_VERSION - 1} -> {SYNTH_VERSION})" in caplog.text
    (second / "versions.json").unlink()  # a run from before versions were recorded counts as other code
    assert _run(tmp_path, chain).name == "run-003"
    with pytest.raises(RunError, match=f"other code \\(synth: {SYNTH_VERSION - 1} -> {SYNTH_VERSION}\\)"):
        _run(tmp_path, chain, run_name="run-001")
    assert _run(tmp_path, chain, run_name="run-001", force=True).name == "run-001"
    (first / "versions.json").write_text("{not json")  # a damaged record names its file and what to do
    with pytest.raises(RunError, match=r"versions.json: unreadable .*remove it"):
        _run(tmp_path, chain, run_name="run-001")
    # a run that uses no simulated data does not depend on the simulator's version
    comp = tmp_path / "competition"  # the pre-flight's least: labels, a picture, the sample submission
    comp.mkdir()
    (comp / "train.csv").write_text("id,MI,AF,HYP,CD,STTC\n1,0,0,0,0,0\n")
    (comp / "sample_submission.csv").write_text("id,MI,AF,HYP,CD,STTC\n2,0,0,0,0,0\n")
    (comp / "1.png").write_bytes(b"")
    plain = {"target": "competition", "stage1_synth": False, "competition_dir": str(comp)}
    made = _run(tmp_path, chain, overrides=plain, new_run=True)
    assert json.loads((made / "versions.json").read_text()) == {}


def test_step_that_does_not_record_outputs_fails(tmp_path):
    nbs = tmp_path / "nbs"
    make_notebook(nbs / "00_lazy.ipynb", [("code", PARAMS, ["parameters"]), ("code", "y = 2", [])])
    with pytest.raises(StepFailed, match="did not record its outputs"):
        _run(tmp_path, nbs)


def test_cli_reports_config_errors(tmp_path, chain, capsys):
    rc = main(["--profile", "smoke", "--set", "sede=1", "--notebooks", str(chain)])
    assert rc == 2 and "did you mean 'seed'" in capsys.readouterr().err


def test_a_notebooks_own_settings_reach_the_runs_config(tmp_path, capsys):
    from utils.core.config import resolve_config
    from utils.core.runs import load_config, open_run, start_step

    run_dir = open_run(resolve_config("smoke", {"working_root": str(tmp_path / "work")}), run_name="run-001")
    assert load_config(run_dir / "config.yaml")["seed"] == 42
    # opened by hand with the run named and the seed edited in the parameters cell
    step = start_step("03_stage1", {"profile": "smoke", "run_dir": str(run_dir), "seed": 7})
    assert step.cfg.seed == 7 and step.cfg.image_height == 64  # the edit on top of the run's settings
    saved = load_config(run_dir / "config.yaml")
    assert saved["seed"] == 7 and saved["image_height"] == 64 and saved["run_dir"] == str(run_dir)
    assert "config.yaml now holds this notebook's settings: seed: 42 -> 7" in capsys.readouterr().out


def test_a_step_records_its_declared_outputs_and_names_a_missing_one(tmp_path):
    import time

    from utils.core.runs import Step, finish_step

    step_dir = tmp_path / "run-001" / "04_stage2"
    (step_dir / "folds" / "fold0").mkdir(parents=True)
    step = Step("04_stage2", None, None, tmp_path / "run-001", step_dir, time.time())
    for name in ("oof.csv", "oof_auroc.json"):
        (step_dir / name).write_text("x")
    (step_dir / "folds" / "fold0" / "best.pt").write_bytes(b"12345")
    with pytest.raises(RunError, match=r"04_stage2 declared output .*04_stage2/curves.png, which does not exist"):
        finish_step(step)
    assert not is_step_complete(step_dir)
    (step_dir / "curves.png").write_bytes(b"png")
    with pytest.raises(RunError, match=r"folds/fold\*/best.pt"):  # a pattern needs one match
        (step_dir / "folds" / "fold0" / "best.pt").unlink()
        finish_step(step)
    (step_dir / "folds" / "fold0" / "best.pt").write_bytes(b"12345")
    (step_dir / "folds" / "fold1").mkdir()
    (step_dir / "folds" / "fold1" / "best.pt").write_bytes(b"123")
    record = json.loads(finish_step(step).read_text())
    assert sorted(o["path"] for o in record["outputs"]) == ["curves.png", "folds/fold0/best.pt", "folds/fold1/best.pt",
                                                            "oof.csv", "oof_auroc.json"]
    assert is_step_complete(step_dir)
    (step_dir / "folds" / "fold1" / "best.pt").write_bytes(b"1")  # a recorded output changed: no longer complete
    assert not is_step_complete(step_dir)
    # an optional output is recorded when present, and its absence is no error
    step5 = Step("05_ensemble", None, None, tmp_path / "run-001", tmp_path / "run-001" / "05_ensemble", time.time())
    step5.dir.mkdir()
    for name in ("model.pt", "submission.csv", "calibration.csv", "reliability.png", "unreadable_test.csv",
                 "test_auroc_by_rule.csv", "test_predictions.csv", "test_fold_probs.npy", "real_auroc.csv"):
        (step5.dir / name).write_text("x")
    paths = [o["path"] for o in json.loads(finish_step(step5).read_text())["outputs"]]
    assert "real_auroc.csv" in paths and "page_reader.pt" not in paths


def test_the_run_ends_with_its_headline_figures(tmp_path):
    from utils.pipeline.runner import figures

    assert figures(tmp_path) == ""
    s05 = tmp_path / "05_ensemble"
    s05.mkdir()
    (s05 / "test_auroc_by_rule.csv").write_text("")  # the test labels hidden (Kaggle): an empty table
    assert figures(tmp_path) == ""
    import pandas as pd

    pd.DataFrame({"reader": ["image model", "signal reader", "ensemble"], "macro": ["0.714 [0.692, 0.736]",
                  "0.677 [0.650, 0.700]", "0.745 [0.72, 0.77]"]}).to_csv(s05 / "real_readers.csv", index=False)
    said = figures(tmp_path)
    assert "the readers side by side" in said and "signal reader" in said and "0.745 [0.72, 0.77]" in said
    assert "test set" not in said


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_mid_step_00_leaves_no_process_behind(tmp_path):
    """SIGTERM (a `timeout`, a stopped job) while step 00's pool draws pictures: the runner ends its kernel and the
    kernel's workers before it exits, says so in one line, and exits 143."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    cmd = [sys.executable, "-m", "utils.pipeline", "--profile", "smoke", "--steps", "00", "--run-name", "stopped",
           "--set", f"output_root={tmp_path}", "--set", "num_workers=2", "--set", "synth_scan_train=5000"]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    seen, workers, deadline = {}, [], time.time() + 180
    try:
        while time.time() < deadline and len(workers) < 2 and run.poll() is None:
            time.sleep(0.5)
            for proc in psutil.Process(run.pid).children(recursive=True):
                seen.setdefault(proc.pid, proc)
            workers = [p for p in seen.values() if _cmdline(p).count("spawn_main")]
        assert len(workers) >= 2, f"step 00's pool never started (exit {run.poll()})"
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill() if run.poll() is None else None
    assert run.returncode == 143 and "stopped by SIGTERM" in err and "the same command resumes" in err
    left = [p.pid for p in seen.values() if _running(p)]
    for proc in seen.values():  # never leave one behind, even when the assertion below fails
        proc.kill() if _running(proc) else None
    assert not left, f"still running after the run ended: {left}"


def _cmdline(proc) -> str:
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _running(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
