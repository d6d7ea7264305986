"""Run the notebooks in order with papermill: `python -m utils.pipeline --profile demo`."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.core.cli import fail
from utils.core.config import ConfigError, describe_options, parse_overrides, resolve_config
from utils.core.paths import REPO_ROOT, Paths, find_attached_weights, resolve_paths
from utils.core.pool import RunStopped, stop_with_descendants
from utils.core.runs import (READS_PICTURES, RunError, drawn_missing, is_step_complete, move_aside, open_run,
    restore_from_input)
from utils.core.session import SessionPaused, session_start
from utils.pipeline.budget import disk_needs, estimate_disk, say_budget
from utils.pipeline.preflight import preflight

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_([A-Za-z0-9_]+)\.ipynb$")
log = logging.getLogger("utils.pipeline")


class StepFailed(RuntimeError):
    """A notebook of the chain raised; the message names the notebook and the cell."""


@dataclass(frozen=True)
class NotebookStep:
    id: str
    name: str  # folder name of the step in a run, e.g. 00_synthesize
    path: Path
    optional: bool = False  # run only when named by its id (notebook metadata "pipeline": {"optional": true})


def _is_optional(path: Path) -> bool:
    import json

    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"notebook {path} cannot be read as JSON: {exc}") from None
    return bool(meta.get("pipeline", {}).get("optional", False))


def discover_steps(notebook_dir: Path) -> list[NotebookStep]:
    steps = []
    for path in sorted(Path(notebook_dir).glob("*.ipynb")):
        m = NOTEBOOK_PATTERN.match(path.name)
        if m:
            steps.append(NotebookStep(m.group(1), path.stem, path, _is_optional(path)))
    return steps


def select_steps(steps: list[NotebookStep], spec: str | None) -> list[NotebookStep]:
    """`01-06`, `03-`, `-02`, `02`, `00,03`: ids are the notebooks' two-digit prefixes.

    Optional notebooks (the ablations) run only when their id is named on its own, e.g. `--steps 07`.
    """
    named = {f"{int(p):02d}" for p in (spec or "").replace(" ", "").split(",") if p.isdigit()}
    steps = [s for s in steps if not s.optional or s.id in named]
    if not spec:
        return steps
    wanted: set[str] = set()
    ids = [s.id for s in steps]
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            lo, hi = int(lo or min(ids)), int(hi or max(ids))
            wanted |= {i for i in ids if lo <= int(i) <= hi}
        elif part.isdigit():
            if f"{int(part):02d}" not in ids:
                raise ConfigError(f"--steps {spec}: no notebook {int(part):02d}_*.ipynb (have {', '.join(ids)})")
            wanted.add(f"{int(part):02d}")
        else:
            raise ConfigError(f"--steps {spec!r}: use ids like 01-06, 03 or 00,02")
    return [s for s in steps if s.id in wanted]


def _step_parameters(step: NotebookStep, cfg: dict, run_dir: Path) -> dict:
    """The resolved values of exactly the parameters the notebook declares."""
    import papermill as pm

    declared = pm.inspect_notebook(str(step.path))
    params = {}
    for name in declared:
        if name == "run_dir":
            params[name] = str(run_dir)
        elif name in cfg:
            params[name] = cfg[name]
    return params


def _source_cell_number(out_nb: Path, cell_index: int) -> int:
    """1-based number of the failing cell in the source notebook (papermill adds an injected cell)."""
    import nbformat

    try:
        cells = nbformat.read(str(out_nb), as_version=4).cells[: cell_index + 1]
    except Exception:  # the executed copy may be unreadable after a crash: fall back to papermill's index
        return cell_index + 1
    return sum("injected-parameters" not in c.metadata.get("tags", []) for c in cells)


def _failure_message(step: NotebookStep, err: Exception, out_nb: Path, log_file: Path) -> str:
    cell = getattr(err, "cell_index", None)
    count = getattr(err, "exec_count", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    source = (getattr(err, "source", "") or "").strip().splitlines()
    if cell is None:
        where = "before any cell ran"
    else:
        where = f"cell {_source_cell_number(out_nb, cell)} (counting from 1"
        where += f", execution count {count})" if count is not None else ")"
    first = f"\n  cell source: {source[0][:120]}" if source else ""
    return (f"step {step.name} ({step.path.name}) failed in {where}: {ename}: {evalue}{first}\n"
            f"  executed notebook: {out_nb}\n  log: {log_file}")


def redraw_reason(step: NotebookStep, later: list[NotebookStep], run_dir: Path) -> str:
    """Why a complete step runs again: the folders it drew under data_root are gone (a new Kaggle session's scratch)
    and a step after it that opens those pictures is still to run; '' when nothing needs them."""
    gone = drawn_missing(run_dir / step.name) if is_step_complete(run_dir / step.name) else []
    readers = [s.name for s in later if s.name in READS_PICTURES and not is_step_complete(run_dir / s.name)]
    if gone and readers:
        return (f"{len(gone)} folder(s) it drew are gone ({gone[0]}{', ...' if len(gone) > 1 else ''}) and "
                f"{', '.join(readers)} will read them: drawing them again from their settings")
    if gone:
        log.info("step %s: %d folder(s) it drew are gone (%s); no step still to run reads them", step.name, len(gone),
                 gone[0])
    return ""


def run_step(step: NotebookStep, cfg: dict, run_dir: Path, force: bool, redraw: str = "") -> str:
    """Execute one notebook into its step folder; returns 'skipped' or 'done'. `redraw`: why a complete step runs
    again (its previous record is kept aside, as with force)."""
    import papermill as pm

    step_dir = run_dir / step.name
    if redraw:
        log.info("step %s: %s; previous record kept in %s", step.name, redraw, move_aside(step_dir))
    elif is_step_complete(step_dir):
        if not force:
            log.info("step %s: complete, skipped (outputs in %s; --force re-runs it)", step.name, step_dir)
            return "skipped"
        log.info("step %s: --force, previous outputs kept in %s", step.name, move_aside(step_dir))
    step_dir.mkdir(parents=True, exist_ok=True)
    out_nb, log_file = step_dir / f"{step.name}.ipynb", step_dir / "log.txt"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    started = time.time()
    log.info("step %s: running %s", step.name, step.path.relative_to(step.path.parent.parent))
    try:
        pm.execute_notebook(str(step.path), str(out_nb), parameters=_step_parameters(step, cfg, run_dir),
                            kernel_name=cfg["kernel_name"], cwd=str(REPO_ROOT), log_output=True,
                            progress_bar=False, request_save_on_cell_execute=True)
    except Exception as err:  # papermill raises its own error for a failing cell, others for kernel problems
        if getattr(err, "ename", "") == SessionPaused.__name__:
            raise SessionPaused(f"step {step.name}: {getattr(err, 'evalue', '')}") from None
        raise StepFailed(_failure_message(step, err, out_nb, log_file)) from err
    finally:
        pm_log.removeHandler(handler)
        handler.close()
    if not is_step_complete(step_dir):
        raise StepFailed(f"step {step.name} ran but did not record its outputs (no complete {step_dir}/step.json); "
                         f"its last cell must call utils.finish_step")
    log.info("step %s: done in %.1f s", step.name, time.time() - started)
    return "done"


def attached_weights(cfg, paths: Paths) -> dict[str, str]:
    """Weights of attached datasets named after their models (`make kaggle-weights` names them so), for the keys
    left empty: the backbone's folder, YOLO's .pt, SAM's checkpoint. A key set to anything (`none` included) wins."""
    wanted = {"backbone_weights": (cfg["backbone"], ""),
              "yolo_weights": (Path(cfg["yolo_model"]).stem, f"{Path(cfg['yolo_model']).stem}.pt"),
              "sam_checkpoint": (f"sam_{cfg['sam_model_type']}", f"sam_{cfg['sam_model_type']}_*.pth")}
    found = {}
    for key, (name, pattern) in wanted.items():
        if not cfg[key] and (path := find_attached_weights(paths, name, pattern)) is not None:
            found[key] = str(path)
    return found


def run_pipeline(profile: str, steps: str | None = None, overrides: dict | None = None, run_name: str | None = None,
                 force: bool = False, new_run: bool = False, notebook_dir: Path | None = None,
                 set_latest: bool = True, budget_only: bool = False) -> Path | None:
    cfg = resolve_config(profile, overrides)
    found = attached_weights(cfg, resolve_paths(cfg))
    if found:
        cfg = resolve_config(profile, {**(overrides or {}), **found})
        log.info("attached weights used: %s (set a key to none to leave them out)",
                 ", ".join(f"{k}={v}" for k, v in found.items()))
    # the kernels papermill starts must import utils whatever their working directory
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["ECG_BATCH"] = "1"  # nobody at these kernels: pictures, not menus (utils.gradcam.explorer)
    every = discover_steps(notebook_dir or REPO_ROOT / "notebooks")
    chain = select_steps(every, steps)
    paths = resolve_paths(cfg)
    if budget_only:  # said, nothing created: no run folder, no restore
        print(f"budget of profile {profile}, steps {' '.join(s.id for s in chain)} (creates nothing):\n"
              + say_budget(cfg, paths, check=False))
        return None
    # the disk is measured once: the pre-flight holds its peak against the free disk, the budget says it
    disk = estimate_disk(cfg, paths) if cfg["disk_budget_gb"] > 0 else None
    log.info("%s", preflight(cfg, paths, [s.id for s in chain], None if disk is None else disk_needs(disk, paths)))
    session_start()  # the session's clock starts here for every notebook and torchrun process below
    if run_name:
        restored = restore_from_input(paths, profile, run_name)
        if restored:
            log.info(restored)
    # said, and a run over the disk refused, before anything is written
    budget = "" if disk is None else say_budget(cfg, paths, disk=disk)
    run_dir = open_run(cfg, run_name=run_name, new_run=new_run, force=force, set_as_latest=set_latest)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)  # the run's pipeline.log records its budget and its steps
    file_handler = logging.FileHandler(run_dir / "pipeline.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(file_handler)
    try:
        if budget:
            log.info("budget of this configuration, before any work:\n%s", budget)
        log.info("run %s, profile %s, steps: %s", run_dir, profile, " ".join(s.id for s in chain) or "(none yet)")
        todo = {s.id: ("" if force else redraw_reason(s, [c for c in chain if c.id > s.id], run_dir))
                for s in every if s in chain or not s.optional}
        for step in (s for s in every if s in chain or todo.get(s.id)):  # a step left out runs to draw again
            run_step(step, cfg, run_dir, force, todo[step.id])
        log.info("run %s: %d step(s) complete", run_dir, len(chain))
        said = figures(run_dir)
        if said:
            log.info("%s", said)
    finally:
        log.removeHandler(file_handler)
        file_handler.close()
    return run_dir


def figures(run_dir: Path) -> str:
    """The run's headline figures as step 05 wrote them: the test set's AUROC per rule and reader, and the real
    records' per reader (image model, signal reader, ensemble) with intervals; '' before step 05 has run (a table
    left empty, as a hidden test set's is, is not shown)."""
    import pandas as pd

    parts, s05 = [], Path(run_dir) / "05_ensemble"
    for name, title in (("test_auroc_by_rule.csv", "test set, macro-AUROC by rule and reader"),
                        ("real_readers.csv", "real records rendered as photos, the readers side by side"),
                        ("real_auroc.csv", "real records rendered as photos, the package")):
        path = s05 / name
        try:  # a hidden test set leaves its table empty: nothing to say of it
            table = pd.read_csv(path) if path.is_file() else pd.DataFrame()
        except pd.errors.EmptyDataError:
            table = pd.DataFrame()
        if len(table):
            parts.append(f"{title} ({path}):\n{table.to_string(index=False)}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline", description=__doc__)
    ap.add_argument("--profile", default="kaggle", help="kaggle, demo, smoke, or a YAML file of overrides")
    ap.add_argument("--steps", help="which notebooks, by prefix: 01-06, 03-, 02 or 00,03 (default: all but the "
                    "optional ablations, which run when named: --steps 07)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one configuration key (repeatable)")
    ap.add_argument("--run-name", help="name of the run folder (default: the newest run if its settings match, else run-NNN)")
    ap.add_argument("--new-run", action="store_true",
                    help="start a new run even if the newest run of the profile has the same settings")
    ap.add_argument("--force", action="store_true", help="re-run complete steps (previous outputs are kept)")
    ap.add_argument("--notebooks", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--list-keys", action="store_true", help="print every configuration key and exit")
    ap.add_argument("--budget-only", action="store_true",
                    help="print the run's disk, CPU and GPU budget (estimates) and exit, creating nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.list_keys:
        print(describe_options())
        return 0
    stop_with_descendants()  # a stopped run takes its kernels and their workers with it
    try:
        run_pipeline(args.profile, args.steps, parse_overrides(args.overrides), args.run_name, args.force,
                     args.new_run, args.notebooks, budget_only=args.budget_only)
    except RunStopped as stopped:
        fail(f"{stopped}. Finished work is kept: the same command resumes the run.")
        return 143
    except (ConfigError, RunError) as err:
        return fail(str(err))
    except StepFailed as err:
        fail(f"{err}\nEarlier steps are kept; fix the cause and re-run the same command to resume.")
        return 1
    except SessionPaused as paused:
        print(paused)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
