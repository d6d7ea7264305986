"""Notebook hygiene, parameter drift, and the whole chain in the smoke profile."""
import ast
import json
from pathlib import Path

import numpy as np
import papermill as pm
import pytest

from utils.ablations.compare import stage2_alone
from utils.core.config import CONFIG_KEYS, DEFAULTS, ConfigError
from utils.pipeline.cells import HEADER, PRELUDE, write_cells
from utils.pipeline.runner import discover_steps, run_pipeline
from utils.core.runs import STEP_OUTPUTS, is_step_complete

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
ids = [p.name for p in NOTEBOOKS]


def test_every_notebook_is_a_step():
    assert [s.path for s in discover_steps(NOTEBOOK_DIR)] == NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_without_outputs_and_with_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "clear the outputs"
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# "), "open with an H1 title"
    assert tagged[0] == 1, "the parameters cell follows the title"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_parameters_exist_in_the_config_with_the_kaggle_defaults(path):
    params = pm.inspect_notebook(str(path))
    assert "profile" in params and "run_dir" in params
    cell = "".join(json.loads(path.read_text())["cells"][1]["source"])
    declared = [n.target.id for n in ast.parse(cell).body if isinstance(n, ast.AnnAssign)]
    assert list(params) == declared, "papermill must see every key the cell declares (one '=' to a line)"
    for name, info in params.items():
        assert name in CONFIG_KEYS, f"{path.name}: parameter '{name}' is not a configuration key"
        assert ast.literal_eval(info["default"]) == DEFAULTS[name], f"{path.name}: '{name}' drifted"
        assert info["help"], f"{path.name}: parameter '{name}' has no comment"


def test_parameters_cells_and_preludes_are_written_from_the_configuration():
    assert write_cells(NOTEBOOKS, check=True) == [], "run: python -m utils.pipeline.cells"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        params = "".join(nb["cells"][1]["source"])
        assert params.startswith(HEADER), path.name
        prelude = "".join(next(c for c in nb["cells"][2:] if c["cell_type"] == "code")["source"])
        assert prelude.startswith(PRELUDE), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_cells_orchestrate(path):
    """Every code cell is calls into utils and a look at their results: no loop, branch, conditional expression or
    definition in a cell (the prelude, written by utils.pipeline.cells and tested on its own, apart), and the step's
    outputs come from their one declaration (STEP_OUTPUTS), not from a list typed in the notebook."""
    nb = json.loads(path.read_text())
    assert cells_not_orchestrating(nb) == [], path.name
    assert path.stem in STEP_OUTPUTS


def cells_not_orchestrating(nb) -> list[str]:
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = source[len(PRELUDE):] if source.startswith(PRELUDE) else source
        for node in ast.walk(ast.parse(source)):
            # a conditional expression may choose what a cell shows, never a value the cell keeps
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and \
                    any(isinstance(n, ast.IfExp) for n in ast.walk(node.value)):
                found.append(f"cell {i + 1} line {node.lineno}: a value chosen by a conditional expression")
            if isinstance(node, (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.FunctionDef, ast.ClassDef)):
                found.append(f"cell {i + 1} line {node.lineno}: {type(node).__name__}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "finish_step" and \
                    (len(node.args) > 1 or any(k.arg == "outputs" for k in node.keywords)):
                found.append(f"cell {i + 1}: finish_step given a list of outputs")
    return found


def test_the_orchestration_check_catches_a_choice_inside_a_cell():
    nb = {"cells": [{"cell_type": "code", "source": [PRELUDE + "\nscores = utils.ensemble_scores()"]},
                    {"cell_type": "code", "source": ["final = calibrated if use_calibration else raw\n"]},
                    {"cell_type": "code", "source": ["for k in range(3):\n    print(k)\n"]}]}
    assert cells_not_orchestrating(nb) == ["cell 2 line 1: a value chosen by a conditional expression",
                                           "cell 3 line 1: For"]
    shown = {"cells": [{"cell_type": "code", "source": ["table if len(table) else 'no table'"]}]}
    assert cells_not_orchestrating(shown) == []  # what a cell shows may depend on what there is


def test_a_default_changed_in_one_place_only_is_caught(monkeypatch, tmp_path):
    from dataclasses import replace

    from utils.core import config

    # the configuration changed, the cells not
    monkeypatch.setitem(config.OPTION_BY_NAME, "seed", replace(config.OPTION_BY_NAME["seed"], default=7))
    stale = write_cells(NOTEBOOKS, check=True)
    assert stale and all("(parameters)" in s for s in stale)
    assert {s.split(":")[0] for s in stale} == {p.name for p in NOTEBOOKS if "seed" in pm.inspect_notebook(str(p))}
    monkeypatch.undo()
    # a cell changed, the configuration not: named, then written back, the rest of the notebook untouched
    copy = tmp_path / "05_ensemble.ipynb"
    copy.write_text((NOTEBOOK_DIR / "05_ensemble.ipynb").read_text().replace("page_epochs: int = 6", "page_epochs: int = 9"))
    assert write_cells([copy], check=True) == ["05_ensemble.ipynb: cell 2 (parameters)"]
    assert "page_epochs: int = 9" in copy.read_text()  # --check changes nothing
    assert write_cells([copy]) == ["05_ensemble.ipynb: cell 2 (parameters)"]
    assert copy.read_text() == (NOTEBOOK_DIR / "05_ensemble.ipynb").read_text()
    # a key the configuration does not know is named
    copy.write_text(copy.read_text().replace("page_epochs: int = 6", "page_epocs: int = 6"))
    with pytest.raises(ConfigError, match="05_ensemble.ipynb: the parameters cell declares 'page_epocs'"):
        write_cells([copy], check=True)


@pytest.mark.slow
def test_smoke_chain_runs_every_notebook(tmp_path):
    import os

    from utils.core.paths import resolve_paths
    from utils.pipeline.budget import estimate_disk
    from utils.core.config import resolve_config

    cfg = resolve_config("smoke", {"working_root": str(tmp_path)})
    disk = estimate_disk(cfg, resolve_paths(cfg))  # said before the work
    run = run_pipeline("smoke", overrides={"working_root": str(tmp_path)})
    written = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(tmp_path / "outputs")
                  for f in files if not os.path.islink(os.path.join(root, f)))
    kept = disk.loc[disk["kept"], "bytes"].sum()
    assert abs(kept - written) <= 0.25 * written, f"disk estimate {kept / 1e6:.1f} MB, written {written / 1e6:.1f} MB"
    for step in discover_steps(NOTEBOOK_DIR):
        if step.optional:  # the ablations run only when named
            assert not (run / step.name).exists(), step.name
            continue
        assert is_step_complete(run / step.name), step.name
        assert (run / step.name / f"{step.name}.ipynb").is_file()
    assert (run / "config.yaml").is_file() and (run / "pipeline.log").is_file()
    # Stage II alone on the same run: a sibling that links 00-03, and the paired difference on the same pictures
    table = stage2_alone(run, n_boot=20)
    sibling = run.parent / f"{run.name}-stage2-alone"
    assert table["run"].tolist() == ["Stage I + Stage II", "Stage II alone"]
    d, lo, hi = table.loc[0, ["delta", "delta_low", "delta_high"]].astype(float)
    assert -1 <= d <= 1 and (np.isnan(lo) or lo - 1e-9 <= d <= hi + 1e-9)  # a six-photo test set may give no interval
    assert (sibling / "03_stage1").is_symlink() and is_step_complete(sibling / "05_ensemble")
    first = json.loads(next((sibling / "04_stage2" / "folds").glob("fold*/result.json")).read_text())
    assert not first["weights_source"].startswith("checkpoint:")  # Stage II did not start from Stage I
    assert table["weights"][1] == first["weights_source"]
