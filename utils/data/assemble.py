"""Step 01: every source into one manifest with a known-mask, data checks as a report, folds written once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text, read_json
from utils.core.keys import split_list
from utils.core.labels import LABELS
from utils.core.paths import Paths, resolve_input_path
from utils.data.checks import inspect_images
from utils.data.folds import fold_prevalence, make_folds, split_stage1_validation
from utils.data.leakage import leakage_guard, real_test_records
from utils.data.sources import class_labels, load_class_folders, load_competition, load_synth

PROBLEM_COLUMNS = ["kind", "where", "detail"]


def discover_scan_sets(paths: Paths, exclude: Path | None = None) -> list[Path]:
    """Attached datasets laid out as class folders (at least two recognised class names side by side)."""
    if paths.input_root is None or not paths.input_root.is_dir():
        return []
    roots = []
    for depth in range(1, 4):
        for folder in sorted(paths.input_root.glob("/".join(["*"] * depth))):
            if not folder.is_dir() or (exclude and folder.resolve() == Path(exclude).resolve()):
                continue
            classes = [c for c in folder.iterdir() if c.is_dir() and class_labels(c.name) is not None]
            if len(classes) >= 2 and not any(folder.is_relative_to(r) for r in roots):
                roots.append(folder)
    return roots


def collect_rows(cfg, paths: Paths, synth_sets: dict[str, str]) -> tuple[list[dict], list[tuple], list[dict]]:
    """Rows of every configured source, their problems, and one line per source used."""
    rows, problems, used = [], [], []

    def add(name: str, root, loaded):
        got, probs = loaded
        rows.extend(dict(r, stage="II" if name == "target" else "I") for r in got)
        problems.extend(probs)
        used.append({"role": name, "root": str(root), "rows": len(got), "problems": len(probs)})

    competition = None
    if cfg["target"] == "competition":
        competition = resolve_input_path(paths, cfg["competition_dir"], "sample_submission.csv",
                                         "competition data", "competition_dir")
        add("target", competition, load_competition(competition))
    else:
        if "photo" not in synth_sets:
            raise FileNotFoundError("target 'synth' needs step 00's photo set: set synth_photo_train > 0")
        add("target", synth_sets["photo"], load_synth(Path(synth_sets["photo"]), source="synth_photo"))
    if cfg["stage1_synth"] and "scan" in synth_sets:
        scan = Path(synth_sets["scan"])
        # renders of recorded waveforms (synth_from_wfdb, synth_from_code15) keep their database's name as source
        recorded = (scan / "synth.json").is_file() and read_json(scan / "synth.json").get("records") is not None
        add("stage1", scan, load_synth(scan, source=None if recorded else "synth_scan"))
    scan_dirs = discover_scan_sets(paths, competition) if cfg["stage1_scan_dirs"] == "auto" \
        else [Path(p) for p in split_list(cfg["stage1_scan_dirs"])]
    for root in scan_dirs:
        if not root.is_dir():
            raise FileNotFoundError(f"scan set {root} does not exist (set by 'stage1_scan_dirs')")
        add("stage1", root, load_class_folders(root, f"scans:{root.name}"))
    for root in map(Path, split_list(cfg["stage1_render_dirs"])):
        if not (root / "train.csv").is_file():
            raise FileNotFoundError(f"{root} has no train.csv: not a folder made by utils.synth "
                                    f"(set by 'stage1_render_dirs')")
        add("stage1", root, load_synth(root))
    for row in rows:  # Stage I rows keep their train split apart from the target's
        if row["stage"] == "I":
            row["split"] = "stage1"
    return rows, problems, used


def _drop(df: pd.DataFrame, mask: pd.Series, kind: str, detail, problems: list) -> pd.DataFrame:
    for _, r in df[mask].iterrows():
        problems.append((kind, r["image"], detail(r) if callable(detail) else detail))
    return df[~mask]


def apply_checks(df: pd.DataFrame, checks: pd.DataFrame, cfg, problems: list) -> pd.DataFrame:
    """Leave out unreadable, too small and duplicate images (test rows are never dropped); list each."""
    df = df.merge(checks[["image", "ok", "width", "height", "sha1", "error"]], on="image", how="left")
    test = df["split"] == "test"
    df = _drop(df, ~df["ok"] & ~test, "unreadable", lambda r: r["error"], problems)
    for _, r in df[~df["ok"]].iterrows():
        problems.append(("unreadable_test", r["image"], f"{r['error']}; kept: the submission needs every id"))
    small = df["ok"] & (df[["width", "height"]].min(1) < cfg["min_image_side"]) & ~(df["split"] == "test")
    df = _drop(df, small, "too_small", lambda r: f"{r['width']}x{r['height']} < {cfg['min_image_side']} px", problems)
    if cfg["check_duplicates"]:
        order = df["split"].map({"train": 0, "test": 1}).fillna(2)  # the target's rows win over Stage I copies
        df = df.assign(_order=order).sort_values("_order", kind="stable")
        dup = df.duplicated("sha1", keep="first") & (df["sha1"] != "") & (df["split"] != "test")
        first = df.drop_duplicates("sha1").set_index("sha1")["image"]
        df = _drop(df, dup, "duplicate", lambda r: f"same content as {first[r['sha1']]}; left out", problems)
        df = df.drop(columns="_order").sort_index()
    no_label = (df[list(LABELS)].isna().all(1)) & (df["split"] != "test")
    return _drop(df, no_label, "no_known_label", "its source says nothing about any label; left out", problems)


def finalize(df: pd.DataFrame, cfg, folds_file: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Known-mask columns, Stage I validation split and the target's folds (reused if already written)."""
    for k in LABELS:
        df[f"known_{k}"] = df[k].notna().astype(int)
    stage1 = df["stage"] == "I"
    if stage1.any():
        df.loc[stage1, "split"] = split_stage1_validation(df[stage1], cfg["stage1_val_fraction"], cfg["seed"])
    train = df[(df["stage"] == "II") & (df["split"] == "train")]
    if folds_file.is_file():
        folds = pd.read_csv(folds_file, dtype={"id": str})
        if set(folds["id"]) != set(train["id"]):
            raise ValueError(f"{folds_file} was written for other training ids; remove it to draw new folds")
    else:
        folds = pd.DataFrame({"id": train["id"].to_numpy(), "group": train["group"].to_numpy(),
                              "fold": make_folds(train, cfg["n_folds"], cfg["seed"])})
        atomic_write_text(folds_file, folds.to_csv(index=False))
    df = df.merge(folds[["id", "fold"]], on="id", how="left")
    df["fold"] = df["fold"].astype("Int64")
    return df, fold_prevalence(df[df["fold"].notna()])


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Counts, known share and prevalence (over known labels) per source and split."""
    rows = []
    for (source, split), part in df.groupby(["source", "split"], sort=False):
        row = {"source": source, "split": split, "style": part["style"].iloc[0], "images": len(part)}
        for k in LABELS:
            known = part[k].dropna()
            row[k] = round(float(known.mean()), 3) if len(known) else np.nan
            row[f"known_{k}"] = round(len(known) / len(part), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def build_manifest(cfg, paths: Paths, synth_sets: dict[str, str], step_dir: Path, progress: bool = True) -> dict:
    """Everything step 01 writes; returns the manifest, summary, fold table, problems and leakage figures."""
    rows, problems, used = collect_rows(cfg, paths, synth_sets)
    if not rows:
        raise ValueError("no rows from any source: check target and the stage1_* settings")
    df = pd.DataFrame(rows)
    if "ecg_id" not in df:
        df["ecg_id"] = np.nan
    checks = inspect_images(df["image"].tolist(), cache=step_dir / "image_checks.csv",
                            want_hash=cfg["check_duplicates"], workers=cfg["num_workers"], progress=progress)
    df = apply_checks(df, checks, cfg, problems)
    leakage = leakage_guard(df, cfg["allow_ptbxl_overlap"], real_test_records(cfg["real_check_dirs"]))
    df, fold_table = finalize(df.reset_index(drop=True), cfg, step_dir / "folds.csv")
    report = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    cols = ["image", "id", "source", "style", "stage", "split", "fold", *LABELS, *[f"known_{k}" for k in LABELS],
            "group", "ecg_id", "width", "height", "sha1", "provenance"]
    manifest = df[[c for c in cols if c in df.columns] + (["submission_id"] if "submission_id" in df else [])]
    atomic_write_text(step_dir / "manifest.csv", manifest.to_csv(index=False))
    atomic_write_text(step_dir / "report.csv", report.to_csv(index=False))
    summary = summarize(manifest)
    atomic_write_text(step_dir / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(step_dir / "fold_prevalence.csv", fold_table.to_csv(index=False))
    atomic_write_text(step_dir / "sources.json", json.dumps({"sources": used, "leakage": leakage}, indent=2))
    return {"manifest": manifest, "summary": summary, "folds": fold_table, "report": report, "sources": used,
            "leakage": leakage}


def problem_counts(report: pd.DataFrame) -> pd.DataFrame | str:
    """Pictures left out or flagged, per kind of problem."""
    return report.groupby("kind").size().rename("count").to_frame() if len(report) else "no problems found"


def synth_sets_of(run_dir: Path) -> dict[str, str]:
    """The synthetic sets step 00 made for this run (name -> folder); none when it did not run."""
    path = Path(run_dir) / "00_synthesize" / "datasets.json"
    return read_json(path) if path.is_file() else {}
