"""Run directories: outputs/<profile>/<run-name>/<NN_step>/, a `latest` pointer, step completion records."""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from utils.core.atomic import atomic_write_json, read_json
from utils.core.config import (CONFIG_KEYS, SESSION_KEYS, Config, diff_configs, load_config, notebook_overrides,
                               resolve_config, save_config)
from utils.core.paths import INPUT_DEPTH, Paths, resolve_paths
from utils.core.versions import SYNTH_VERSION

STEP_RECORD = "step.json"
# What each step leaves in its folder, declared once; finish_step records it and is_step_complete checks it. A name
# must exist; a pattern with * records every match and needs one; a trailing ? marks what only some runs write.
STEP_OUTPUTS: dict[str, tuple[str, ...]] = {
    "00_synthesize": ("datasets.json", "summary.csv", "samples.png"),
    "01_assemble": ("manifest.csv", "folds.csv", "report.csv", "summary.csv", "fold_prevalence.csv", "sources.json",
                    "prevalence.png", "samples.png"),
    "02_preprocess": ("detector_eval.csv", "worst_iou.png", "fallbacks_and_failures.csv", "fallbacks.png",
                      "cache/*/cache.csv", "before_after_*.png"),
    "03_stage1": ("model/best.pt", "model/history.csv", "model/result.json", "curves.png"),
    "04_stage2": ("oof.csv", "oof_auroc.json", "curves.png", "folds/fold*/best.pt"),
    "05_ensemble": ("model.pt", "submission.csv", "calibration.csv", "reliability.png", "unreadable_test.csv",
                    "test_auroc_by_rule.csv", "test_predictions.csv", "test_fold_probs.npy", "page_reader.pt?",
                    "real_auroc.csv?", "test_auroc_ci.csv?", "roc_test.png?", "test_auroc_by_severity.csv?",
                    "signal_reader.pt?", "oof_digitised.npz?", "real_readers.csv?"),
    "06_gradcam": ("attention.csv", "faithfulness.csv", "faithfulness_scores.csv", "explorer.png", "report.html",
                   "gallery_*.png?", "signal_drivers.csv?", "signal_saliency.png?"),
    "07_ablations": ("runs.csv", "voting.csv", "style.csv", "tables.md", "recorded_vs_simulated.csv", "table_*.csv?",
                     "tables.png?", "robustness.csv?", "robustness.png?", "robustness_examples.png?"),
}
# the steps that open step 00's pictures themselves (not only tables made of them): a session whose data_root no
# longer holds them (Kaggle keeps /kaggle/temp for one session) draws them again before one of these runs
READS_PICTURES = ("01_assemble", "02_preprocess", "05_ensemble", "06_gradcam", "07_ablations")
VERSIONS_FILE = "versions.json"  # what made the run's data beyond its settings: the simulator's version
RUN_PATTERN = re.compile(r"^run-(\d{3,})$")
log = logging.getLogger("utils.runs")


class RunError(RuntimeError):
    """A run directory that cannot be used as asked."""


def profile_root(paths: Paths, profile: str) -> Path:
    return paths.output_root / Path(profile).stem


def next_run_name(root: Path) -> str:
    taken = [int(m.group(1)) for p in root.glob("run-*") if (m := RUN_PATTERN.match(p.name))]
    return f"run-{max(taken, default=0) + 1:03d}"


def latest_run(root: Path) -> Path | None:
    link = root / "latest"
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
        return target if target.is_dir() else None
    pointer = root / "latest.txt"
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        return target if target.is_dir() else None
    return None


def set_latest(root: Path, run_dir: Path) -> None:
    link = root / "latest"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(run_dir.name, target_is_directory=True)
    except OSError:  # file systems without symlinks get a text pointer
        (root / "latest.txt").write_text(run_dir.name + "\n")


def code_versions(cfg: Mapping[str, Any]) -> dict[str, int]:
    """The versions of the code that makes a run's data, where its settings use it: a run whose pictures came from
    another simulator is another experiment, though its settings read the same."""
    return {"synth": SYNTH_VERSION} if cfg.get("target") == "synth" or cfg.get("stage1_synth") else {}


def run_versions(run_dir: Path) -> dict:
    """The versions a run was made with ({} for runs made before they were recorded)."""
    path = Path(run_dir) / VERSIONS_FILE
    try:
        return read_json(path) if path.is_file() else {}
    except ValueError as err:
        raise RunError(f"{path}: unreadable ({err}); remove it to treat the run as made before versions were "
                       f"recorded") from err


def _version_change(run_dir: Path, now: dict) -> str:
    made = run_versions(run_dir)
    changed = [f"{k}: {made.get(k, 'unrecorded')} -> {v}" for k, v in now.items() if made.get(k) != v]
    return ", ".join(changed)


def open_run(cfg: Config, run_name: str | None = None, new_run: bool = False, force: bool = False,
             set_as_latest: bool = True) -> Path:
    """The run folder: the named one, else the newest run of the profile if its settings and the simulator's version
    match, else a new one.

    A run is reopened only with identical settings and versions (or --force), and the log says so: never reused
    silently.
    """
    versions = code_versions(cfg)
    paths = resolve_paths(cfg)
    root = profile_root(paths, cfg["profile"])
    root.mkdir(parents=True, exist_ok=True)
    if run_name:
        run_dir = root / run_name
    else:
        latest = None if new_run else latest_run(root)
        same = latest is not None and (latest / "config.yaml").is_file() \
            and not diff_configs(load_config(latest / "config.yaml"), cfg, ("run_dir", *SESSION_KEYS))
        if same and (moved := _version_change(latest, versions)):
            log.info("not reopening %s: its data came from other code (%s); starting a new run", latest, moved)
            same = False
        run_dir = latest if same else root / next_run_name(root)
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        changed = diff_configs(load_config(config_file), cfg, ("run_dir", *SESSION_KEYS))
        if changed and not force:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise RunError(f"run {run_dir} was made with other settings ({lines}); choose a new --run-name, "
                           f"or pass --force to re-run its steps with these settings")
        moved = _version_change(run_dir, versions)
        if moved and not force:
            raise RunError(f"run {run_dir} was made by other code ({moved}): its complete steps would be kept and "
                           f"the rest made by this code; choose a new --run-name, or pass --force to go on anyway")
        log.info("reopening run %s (same settings): complete steps are skipped; --new-run starts afresh", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config({**cfg, "run_dir": str(run_dir)}, config_file)
    atomic_write_json(run_dir / VERSIONS_FILE, versions)
    if set_as_latest:
        set_latest(root, run_dir)
    return run_dir


def copy_tree(source: Path, dest: Path) -> int:
    """Files and links of source into dest, writable whatever the source's modes (an attached dataset is read-only);
    files already in dest are kept. Returns the number copied."""
    n = 0
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        (Path(dest) / rel).mkdir(parents=True, exist_ok=True)
        for name in dirs + files:
            src, dst = Path(root) / name, Path(dest) / rel / name
            if src.is_symlink() and not (dst.exists() or dst.is_symlink()):
                dst.symlink_to(os.readlink(src))
                n += 1
            elif src.is_file() and not dst.exists():
                shutil.copyfile(src, dst)
                n += 1
    return n


def restore_from_input(paths: Paths, profile: str, run_name: str) -> str:
    """A new session: copy a previous session's run (its whole outputs/ folder, attached as a notebook's output under
    input_root) into this session's output root when the run is not there yet. Returns what was done."""
    target = profile_root(paths, profile) / run_name
    if paths.input_root is None or (target / "config.yaml").is_file():
        return ""
    rel = Path(Path(profile).stem) / run_name / "config.yaml"
    found = sorted(p for depth in range(1, INPUT_DEPTH) for p in Path(paths.input_root).glob("*/" * depth + "outputs")
                   if (p / rel).is_file())  # a notebook's output: /kaggle/input/<slug> or .../notebooks/<owner>/<slug>
    if not found:
        return ""
    source = found[0]
    copy_tree(source, paths.output_root)
    log.info("restored run %s from the attached output %s", run_name, source)
    return f"restored run {run_name} from {source} (the previous session's output)"


def find_step_dir(run_dir: Path, step_id: str) -> Path | None:
    """The folder of step `NN` in a run (e.g. '00' -> run/00_synthesize), or None."""
    hits = sorted(p for p in Path(run_dir).glob(f"{step_id}_*") if p.is_dir() and ".prev-" not in p.name)
    return hits[0] if hits else None


def is_step_complete(step_dir: Path) -> bool:
    """A step is complete when its record says so and every output it listed is still there, same size."""
    record = Path(step_dir) / STEP_RECORD
    if not record.is_file():
        return False
    try:
        data = read_json(record)
    except ValueError:
        return False
    if data.get("status") != "complete":
        return False
    for item in data.get("outputs", []):
        path = Path(step_dir) / item["path"]
        if not path.exists() or (path.is_file() and path.stat().st_size != item["bytes"]):
            return False
    return True


def drawn_missing(step_dir: Path) -> list[str]:
    """The folders a complete step drew under data_root that are gone (a new session's scratch starts empty)."""
    record = Path(step_dir) / STEP_RECORD
    try:
        drawn = read_json(record).get("drawn", []) if record.is_file() else []
    except ValueError:
        return []
    return [d for d in drawn if not Path(d).is_dir()]


def move_aside(step_dir: Path) -> Path:
    """Keep a previous attempt of a step as <step>.prev-K instead of overwriting it."""
    k = 1
    while (target := step_dir.with_name(f"{step_dir.name}.prev-{k}")).exists():
        k += 1
    shutil.move(str(step_dir), target)
    return target


@dataclass
class Step:
    """What a notebook needs: its resolved config, its paths, its run and its own output folder."""
    name: str
    cfg: Config
    paths: Paths
    run_dir: Path
    dir: Path
    started: float

    def upstream(self, step_id: str) -> Path:
        found = find_step_dir(self.run_dir, step_id)
        if found is None or not is_step_complete(found):
            raise RunError(f"step {self.name} needs step {step_id} of run {self.run_dir}, which is not complete: "
                           f"run it first (python -m utils.pipeline --run-name {self.run_dir.name} ...)")
        return found


def start_step(name: str, namespace: Mapping[str, Any]) -> Step:
    """Called by each notebook's resolve cell with its parameters (`globals()`)."""
    profile = namespace.get("profile", "kaggle")
    overrides = notebook_overrides(namespace)
    cfg = resolve_config(profile, overrides)
    run_dir_text = cfg["run_dir"]
    if run_dir_text:
        run_dir = Path(run_dir_text)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:  # opened by hand: continue the newest run of this profile, or start one
        root = profile_root(resolve_paths(cfg), profile)
        run_dir = latest_run(root) or open_run(cfg, new_run=True)
    if (run_dir / "config.yaml").is_file():  # the run's settings hold for every step; the notebook's changes on top
        run_cfg = load_config(run_dir / "config.yaml")
        cfg = resolve_config(profile, {**{k: v for k, v in run_cfg.items() if k in CONFIG_KEYS and k != "profile"},
                                       **overrides})
        changed = diff_configs(run_cfg, {**cfg, "run_dir": run_cfg.get("run_dir", str(run_dir))})
        if changed:  # a notebook's own settings become the run's: later steps and the runner see them
            save_config({**cfg, "run_dir": str(run_dir)}, run_dir / "config.yaml")
            print("the run's config.yaml now holds this notebook's settings: "
                  + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    step_dir = run_dir / name
    if is_step_complete(step_dir):  # only when opened by hand: the runner skips or moves complete steps first
        kept = move_aside(step_dir)
        print(f"step {name} was complete; running it again, its previous outputs are kept in {kept}")
    step_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config({**cfg, "run_dir": str(run_dir)})
    return Step(name, cfg, resolve_paths(cfg), run_dir, step_dir, time.time())


def declared_outputs(step: Step) -> list[Path]:
    """The files a step's declaration (STEP_OUTPUTS) finds in its folder; RunError names a required one missing."""
    if step.name not in STEP_OUTPUTS:
        raise RunError(f"step {step.name} has no declared outputs (STEP_OUTPUTS in utils/core/runs.py)")
    found = []
    for entry in STEP_OUTPUTS[step.name]:
        pattern, optional = entry.rstrip("?"), entry.endswith("?")
        hits = sorted(step.dir.glob(pattern)) if "*" in pattern else [step.dir / pattern]
        hits = [h for h in hits if h.exists()]
        if not hits and not optional:
            raise RunError(f"step {step.name} declared output {step.dir / pattern}, which does not exist")
        found += hits
    return found


def finish_step(step: Step, outputs: Iterable[Path | str] | None = None,
                summary: Mapping[str, Any] | None = None, drawn: Iterable[Path | str] = ()) -> Path:
    """Record the step's outputs (its declared ones when `outputs` is None; paths relative to its folder) and the
    folders it drew under data_root (`drawn`: made again from their settings, so not part of what a resume needs);
    written last, so a killed step stays incomplete."""
    outputs = declared_outputs(step) if outputs is None else outputs
    items = []
    for out in outputs:
        path = Path(out)
        path = path if path.is_absolute() else step.dir / path
        if not path.exists():
            raise RunError(f"step {step.name} declared output {path}, which does not exist")
        size = path.stat().st_size if path.is_file() else 0
        items.append({"path": str(path.relative_to(step.dir)) if path.is_relative_to(step.dir) else str(path),
                      "bytes": size})
    record = {"step": step.name, "status": "complete", "seconds": round(time.time() - step.started, 1),
              "outputs": items, "drawn": [str(Path(d).resolve()) for d in drawn], "summary": dict(summary or {})}
    atomic_write_json(step.dir / STEP_RECORD, record)
    return step.dir / STEP_RECORD
