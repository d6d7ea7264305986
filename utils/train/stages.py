"""Steps 03 and 04: Stage I on scan-like sources, Stage II per fold on the target, through the same fit()."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text
from utils.core.session import PAUSED, SessionPaused, deadline
from utils.core.keys import split_list
from utils.core.labels import LABELS
from utils.core.metrics import auroc_table
from utils.core.paths import REPO_ROOT
from utils.train.dataset import attach_cache
from utils.train.engine import fit
from utils.train.settings import TrainSettings
from utils.train.models import SCRATCH


def load_training_table(run_dir_01: Path, run_dir_02: Path, strategy: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest with each row's cached image for one strategy; rows without one are returned apart."""
    manifest = pd.read_csv(run_dir_01 / "manifest.csv", dtype={"id": str})
    cache = run_dir_02 / "cache" / strategy / "cache.csv"
    if not cache.is_file():
        raise FileNotFoundError(f"no cache for strategy {strategy!r} in {run_dir_02}: add it to 'strategies' in step 02")
    return attach_cache(manifest, pd.read_csv(cache, dtype={"id": str}))


def run_fit(s: TrainSettings, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: Path, multi_gpu: bool,
            limit: float | None = None) -> dict:
    """fit() here, or under torchrun on every GPU when there are several (DistributedDataParallel); SessionPaused
    when the session's limit came first."""
    import torch

    n_gpu = torch.cuda.device_count()
    if not (multi_gpu and n_gpu > 1):
        return fit(s, train_df, val_df, Path(out_dir), limit)
    return launch_ddp(s, train_df, val_df, Path(out_dir), n_gpu, limit)


def launch_ddp(s: TrainSettings, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: Path, nproc: int,
               limit: float | None = None) -> dict:
    """fit() in `nproc` processes through torchrun (`python -m utils.train.engine`), as the Kaggle notebooks run it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "settings.json", json.dumps(asdict(s)))
    train_df.to_csv(out_dir / "train_rows.csv", index=False)
    val_df.to_csv(out_dir / "val_rows.csv", index=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "utils.train.engine",
           "--settings", str(out_dir / "settings.json"), "--train", str(out_dir / "train_rows.csv"),
           "--val", str(out_dir / "val_rows.csv"), "--out", str(out_dir)] + (["--limit", repr(limit)] if limit else [])
    print("running on", nproc, "processes:", " ".join(cmd))
    done = subprocess.run(cmd, cwd=REPO_ROOT)
    if (out_dir / "paused.txt").is_file() and not (out_dir / "result.json").is_file():
        raise SessionPaused((out_dir / "paused.txt").read_text().strip())
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, cmd)
    return json.loads((out_dir / "result.json").read_text())


def is_real_scan(source: pd.Series) -> pd.Series:
    """Scanned or photographed paper (class-folder sets); everything else in Stage I is rendered by software."""
    return source.astype(str).str.startswith("scans:")


def is_simulated(source: pd.Series) -> pd.Series:
    """Pictures of the project's simulated waveforms (step 00); renders of recorded ones carry their database's name."""
    return source.astype(str).str.startswith("synth")


def stage1_kind(source: pd.Series) -> pd.Series:
    """real (scanned paper), simulated (simulated waveforms drawn by software) or recorded (recorded waveforms drawn
    by software, e.g. PTB-XL or CODE-15% renders)."""
    return pd.Series(np.where(is_real_scan(source), "real", np.where(is_simulated(source), "simulated", "recorded")),
                     index=source.index)


# stage1_sources -> the kinds of Stage I picture it keeps; "synthetic" is the paper's word for every software render
STAGE1_KINDS = {"all": ("real", "simulated", "recorded"), "real": ("real",), "synthetic": ("simulated", "recorded"),
                "simulated": ("simulated",), "recorded": ("recorded",)}


def stage1_rows(table: pd.DataFrame, which: str = "all") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage I training and validation rows of the chosen kind (see STAGE1_KINDS)."""
    rows = table[table["split"].isin(["stage1", "stage1_val"])]
    rows = rows[stage1_kind(rows["source"]).isin(STAGE1_KINDS[which]).to_numpy()]
    train, val = rows[rows["split"] == "stage1"], rows[rows["split"] == "stage1_val"]
    if train.empty or val.empty:
        kinds = table.loc[table["stage"] == "I", "source"].value_counts().to_dict()
        raise ValueError(f"Stage I needs 'stage1' and 'stage1_val' rows of kind {which!r} in the manifest; its "
                         f"Stage I sources are {kinds or 'none'} (real ones come from stage1_scan_dirs, recorded "
                         f"ones from stage1_render_dirs)")
    return train, val


def stage1_counts(table: pd.DataFrame, which: str = "all") -> pd.DataFrame:
    """Stage I pictures per source and split, of the kinds `which` keeps."""
    return pd.concat(stage1_rows(table, which)).groupby(["source", "split"]).size().rename("images").to_frame()


def fold_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Stage II training pictures per fold."""
    return table[(table["stage"] == "II") & (table["split"] == "train")].groupby("fold").size().rename("images") \
        .to_frame()


def histories(out_dir: Path) -> dict[str, pd.DataFrame]:
    """Each fit's history under out_dir: 'stage I' for a model folder, 'fold k' for each fold folder."""
    out_dir = Path(out_dir)
    if (out_dir / "history.csv").is_file():
        return {"stage I": pd.read_csv(out_dir / "history.csv")}
    folds = sorted(out_dir.glob("fold*/history.csv"), key=lambda p: int(p.parent.name[4:]))
    return {f"fold {p.parent.name[4:]}": pd.read_csv(p) for p in folds}


def stage1(cfg, table: pd.DataFrame, out_dir: Path) -> dict:
    train, val = stage1_rows(table, cfg["stage1_sources"])
    s = TrainSettings.from_config(cfg, epochs=cfg["stage1_epochs"])
    return run_fit(s, train, val, out_dir, cfg["multi_gpu"], deadline(cfg["session_hours"])) | {
        "train_rows": len(train), "val_rows": len(val),
        "train_sources": {str(k): int(v) for k, v in train["source"].value_counts().sort_index().items()}}


def stage1_weights(step) -> Path | None:
    """Step 03's best weights when Stage II starts from them (stage2_init 'stage1'), else None (step 03 not needed)."""
    return step.upstream("03") / "model" / "best.pt" if step.cfg["stage2_init"] == "stage1" else None


def stage2(cfg, table: pd.DataFrame, out_dir: Path, stage1_best: Path | None) -> pd.DataFrame:
    """The folds of folds_to_run (all when empty); complete folds are skipped. Returns every fold's result once all
    are done; until then SessionPaused says which remain."""
    target = table[(table["stage"] == "II") & (table["split"] == "train")]
    folds = sorted(int(f) for f in target["fold"].dropna().unique())
    wanted = [int(f) for f in split_list(cfg["folds_to_run"])] or folds
    start = {"lr": cfg["stage2_lr"] or cfg["lr"]}
    if cfg["stage2_init"] == "stage1":
        if stage1_best is None or not Path(stage1_best).is_file():
            raise FileNotFoundError("stage2_init 'stage1' needs step 03's best.pt; run step 03 or set stage2_init")
        # Stage I's weights replace the backbone's
        start |= {"init_checkpoint": str(stage1_best), "backbone_weights": SCRATCH, "hub": False}
    elif cfg["stage2_init"] == "scratch":
        start |= {"backbone_weights": SCRATCH, "hub": False}
    for k in wanted:
        fold_dir = Path(out_dir) / f"fold{k}"
        if (fold_dir / "result.json").is_file():
            result = json.loads((fold_dir / "result.json").read_text())
            print(f"fold {k}: complete, skipped (best macro-AUROC {result['best_macro_auroc']:.4f})")
            continue
        s = TrainSettings.from_config(cfg, epochs=cfg["stage2_epochs"], **start)
        train, val = target[target["fold"] != k], target[target["fold"] == k]
        run_fit(s, train, val, fold_dir, cfg["multi_gpu"], deadline(cfg["session_hours"]))
    remaining = [k for k in folds if not (Path(out_dir) / f"fold{k}" / "result.json").is_file()]
    if remaining:  # a session's share of the folds is done: the step completes when every fold is
        raise SessionPaused(f"{PAUSED}; folds {remaining} remain: run step 04 again (folds_to_run for a session's "
                            f"share, or empty for all)")
    return pd.DataFrame([{"fold": k, **json.loads((Path(out_dir) / f"fold{k}" / "result.json").read_text())}
                         for k in folds])


def collect_oof(out_dir: Path, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Out-of-fold predictions of every fold's best model, with the labels, and their AUROC."""
    parts = []
    for fold_dir in sorted(Path(out_dir).glob("fold*")):
        pred = fold_dir / "val_predictions.csv"
        if pred.is_file():
            parts.append(pd.read_csv(pred, dtype={"id": str}).assign(fold=int(fold_dir.name[4:])))
    if not parts:
        raise FileNotFoundError(f"no fold predictions under {out_dir}")
    oof = pd.concat(parts, ignore_index=True)
    truth = table.set_index("id").loc[oof["id"], list(LABELS)].to_numpy(float)
    known = ~np.isnan(truth)
    macro, per = auroc_table(np.nan_to_num(truth), oof[list(LABELS)].to_numpy(), known)
    labelled = oof.join(pd.DataFrame(truth, columns=[f"y_{k}" for k in LABELS]))
    return labelled, {"macro_auroc": macro, **per}
