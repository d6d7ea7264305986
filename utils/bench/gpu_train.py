"""Training on a GPU in one call: `make gpu-train` (python -m utils.bench.gpu_train [--minutes 8]).

Within a wall-clock budget, on whatever GPU is there, it writes outputs/gpu-train/<date>/results.json and results.md
(a new folder when one exists), each part as soon as it ends:
1. efficiency: a ConvNeXt-Base training step at the kaggle size and batch in fp16 (Kaggle's T4 precision), each
   speed change added in turn (cuDNN's kernel search, the fused AdamW, torch.compile): images/s, share of the fp16
   datasheet peak, peak memory; the compile's own seconds;
2. t4_memory: the same step under a T4's memory (torch.cuda.set_per_process_memory_fraction) at the kaggle batch and
   accumulation, fp16 forced: does it fit, and its peak (the budget printed before a Kaggle run reads this answer);
3. chain: steps 00-05 of a reduced kaggle profile sized to the budget left (synthetic scans and photos as many as the
   measured rates allow, Stage I, Stage II over two folds, the packaged ensemble on the test photos): images/s per
   step, the learning curves, Stage I's validation AUROC, the test AUROC, and the real-ECG check's when PTB-XL records
   are beside the repository.
Without a GPU it runs the smoke profile's scale on the CPU ("no GPU: CPU figures only"; the tests run it), the
CUDA-only parts say why they were not run. The weights are random unless --backbone-weights names a file: the figures
are speed, the AUROCs what a few minutes of training from scratch reach.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from utils.bench.gpu import device_info, run_part
from utils.bench.train import step_rate
from utils.core.atomic import atomic_write_json, atomic_write_text, new_folder
from utils.core.cli import add_debug, run_cli
from utils.core.config import DEFAULTS, resolve_config
from utils.core.device import FP16, device_precision, forward_flops, peak_tflops, resolve_device
from utils.core.figures import training_curves
from utils.core.paths import REPO_ROOT, resolve_paths
from utils.core.pool import usable_cores
from utils.core.runs import find_step_dir
from utils.pipeline import budget
from utils.pipeline.runner import run_pipeline
from utils.train.models import create_model
from utils.train.speed import optimizer

T4_ALLOCATABLE_GIB = 14.0  # a T4 reports 14.7 GiB; the CUDA context and cuDNN's workspace live outside the allocator
BUDGET_SHARES = {"efficiency": 0.2, "synth": 0.12, "prep": 0.1, "stage1": 0.28, "stage2": 0.18}  # the rest: 05, slack
EPOCHS = {"stage1": 3, "stage2": 2}
REAL_RECORDS = REPO_ROOT.parent / "shared" / "data" / "ptbxl-dev"
SCALES = {"gpu": {"backbone": DEFAULTS["backbone"], "size": (DEFAULTS["image_height"], DEFAULTS["image_width"]),
                  "batch": DEFAULTS["batch_size"], "steps": 10},
          "cpu": {"backbone": "test_convnext", "size": (64, 96), "batch": 4, "steps": 2}}
SETTINGS = ("eager, cudnn.benchmark off, AdamW (foreach)", "+ cudnn.benchmark", "+ fused AdamW", "+ torch.compile")
ALL = SETTINGS[-1]


def efficiency_table(scale: dict, device: torch.device, info: dict, weights: str = "none") -> list[dict]:
    """The training step with each speed change added in turn; fp16 on a GPU (the T4's precision), fp32 on a CPU."""
    precision = FP16 if device.type == "cuda" else device_precision(device)
    model, _ = create_model(scale["backbone"], 5, weights=weights, hub=False)
    model = model.to(device).to(memory_format=torch.channels_last)
    size, batch = scale["size"], scale["batch"]
    flops = forward_flops(model, size, device)
    peak = peak_tflops(info["name"], precision.name)
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch, 5), device=device).float()
    rows = []
    for k, setting in enumerate(SETTINGS):
        row = {"setting": setting, "backbone": scale["backbone"], "size": f"{size[0]}x{size[1]}", "batch": batch,
               "precision": precision.name, "channels_last": True}
        if setting == ALL and device.type != "cuda":
            rows.append({**row, "note": "not run: torch.compile is off on a CPU (torch_compile auto)"})
            continue
        torch.backends.cudnn.benchmark = k >= 1
        fused = k >= 2 and device.type == "cuda"
        opt = optimizer(model, 1e-4, 1e-2, device) if fused \
            else torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2, foreach=True)
        net, compile_s = model, None
        if setting == ALL:
            net, t = torch.compile(model), time.perf_counter()
            try:
                step_rate(net, opt, x, y, torch.ones_like(y), 1, precision.dtype)  # compiles forward and backward
            except Exception as exc:  # noqa: BLE001 - training falls back the same way (utils.train.engine)
                rows.append({**row, "note": f"torch.compile failed: {type(exc).__name__}: "
                                            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"})
                continue
            compile_s = round(time.perf_counter() - t, 1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = step_rate(net, opt, x, y, torch.ones_like(y), scale["steps"], precision.dtype)
        tflops = rate * 3 * flops / 1e12  # forward + backward (about twice the forward)
        rows.append({**row, "images_per_s": round(rate, 2), "achieved_tflops": round(tflops, 3),
                     "share_of_peak": round(tflops / peak, 4) if peak else None,
                     "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
                     if device.type == "cuda" else None, "compile_seconds": compile_s})
        print(f"efficiency: {rows[-1]}", flush=True)
    measured = [r for r in rows if r.get("images_per_s")]
    if measured:  # what a fit runs with: every change that worked (the budget reads this row's share)
        measured[-1]["as_trained"] = True
    return rows


def t4_memory(backbone: str, size: tuple[int, int], batch: int, accum: int, device: torch.device) -> dict:
    """A training step of the kaggle configuration with this GPU's memory capped at a T4's, fp16 forced: fits or not."""
    if device.type != "cuda":
        raise RuntimeError(f"the T4 memory check needs a CUDA device, and {device} is not one: it caps a GPU's memory "
                           f"at a T4's {T4_ALLOCATABLE_GIB:g} GiB (torch.cuda.set_per_process_memory_fraction)")
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, T4_ALLOCATABLE_GIB * 2 ** 30 / total)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    out = {"backbone": backbone, "size": f"{size[0]}x{size[1]}", "batch": batch, "accum_steps": accum,
           "precision": "fp16", "cap_gib": round(fraction * total / 2 ** 30, 2)}
    try:
        torch.cuda.reset_peak_memory_stats(device)
        model = create_model(backbone, 5, weights="none", hub=False)[0].to(device).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (batch, 5), device=device).float()
        step_rate(model, optimizer(model, 1e-4, 1e-2, device), x, y,
                  torch.ones_like(y), max(2, accum), FP16.dtype)
        out.update(fits=True, peak_memory_gib=round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2))
    except torch.cuda.OutOfMemoryError as exc:
        out.update(fits=False, peak_memory_gib=None, note=str(exc).splitlines()[0][:200])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    return out


def plan(seconds: float, train_rate: float, per_picture: dict[str, float], cores: int) -> dict:
    """Picture counts for the chain so that each step takes about its share of `seconds`: the smallest of the counts
    that the synthesis, the cache and the two stages allow (photos a third of the scans, the test a quarter of them)."""
    scan_s, photo_s, prep_s = per_picture["scan"], per_picture["photo"], per_picture["prep"]
    per_scan_synth = (scan_s + (1 / 3 + 1 / 12) * photo_s) / cores
    per_scan_prep = (1 + 1 / 3 + 1 / 12) * prep_s / cores
    bounds = {"synthesis": BUDGET_SHARES["synth"] * seconds / max(per_scan_synth, 1e-6),
              "cache": BUDGET_SHARES["prep"] * seconds / max(per_scan_prep, 1e-6),
              "Stage I": BUDGET_SHARES["stage1"] * seconds * train_rate / EPOCHS["stage1"],
              "Stage II": 3 * BUDGET_SHARES["stage2"] * seconds * train_rate / EPOCHS["stage2"]}
    scans = max(64, int(min(bounds.values())))
    return {"synth_scan_train": scans, "synth_photo_train": max(24, scans // 3), "synth_photo_test": max(16, scans // 12),
            "limited_by": min(bounds, key=bounds.get), "bounds": {k: int(v) for k, v in bounds.items()}}


def picture_seconds() -> dict[str, float]:
    """Seconds per picture, on one core, of the kaggle profile's synthetic scan and photo and of its roi_clahe cache,
    timed on a few of each as the budget times them."""
    cfg = resolve_config("kaggle", {"target": "synth", "detector": "classical", "strategies": "roi_clahe",
                                    "synth_photo_train": 1, "synth_photo_test": 1, "stage1_scan_dirs": ""})
    budget.SECONDS.clear()
    budget.estimate_disk(cfg, resolve_paths(cfg))
    return {"scan": float(np.mean(budget.SECONDS[("00", "scan")])),
            "photo": float(np.mean(budget.SECONDS[("00", "photo")])),
            "prep": float(np.mean(budget.SECONDS[("02", "roi_clahe")]))}


def chain_overrides(device: torch.device, counts: dict, args) -> tuple[str, dict]:
    """The profile and overrides of the chain: the kaggle profile reduced on a GPU, the smoke profile on a CPU."""
    real = str(REAL_RECORDS) if REAL_RECORDS.is_dir() else ""
    common = {"target": "synth", "stage1_scan_dirs": "", "stage1_render_dirs": "", "detector": "classical",
              "strategies": "roi_clahe", "train_strategy": "roi_clahe", "n_folds": 2, "disk_budget_gb": 0,
              "session_hours": 0, "working_root": args.working, "real_check_dirs": real,
              "torch_compile": args.compile}
    if device.type != "cuda":
        return "smoke", {**common, "device": "cpu", "stage1_epochs": 1, "real_check_dirs": ""}
    return "kaggle", {**common, **{k: counts[k] for k in ("synth_scan_train", "synth_photo_train", "synth_photo_test")},
                      "backbone_weights": args.backbone_weights, "backbone_hub": False, "device": "cuda",
                      "stage1_epochs": EPOCHS["stage1"], "stage2_epochs": EPOCHS["stage2"], "patience": 10,
                      "bootstrap_samples": 200}


def _macro(path: Path) -> float | None:
    """The macro row of a bootstrap table (label, auroc, ci_low, ci_high)."""
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    row = table[table["label"] == "macro"]
    return float(row["auroc"].iloc[0]) if len(row) else None


def chain_report(run_dir: Path, out: Path) -> dict:
    """Per step: seconds and pictures per second; per fit: training images/s, peak memory and validation AUROC; the
    learning curves; Stage I validation, test and real AUROC."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    made = cfg["synth_scan_train"] + cfg["synth_photo_train"] + cfg["synth_photo_test"]
    pictures = {"00": made, "02": made, "05": cfg["synth_photo_test"]}
    steps, fits, histories = [], [], {}
    for step_id in ("00", "01", "02", "03", "04", "05"):
        d = find_step_dir(run_dir, step_id)
        secs = json.loads((d / "step.json").read_text()).get("seconds") if d and (d / "step.json").is_file() else None
        n = pictures.get(step_id)
        steps.append({"step": d.name if d else step_id, "seconds": secs, "pictures": n,
                      "pictures_per_s": round(n / secs, 2) if n and secs else None})
    s03, s04, s05 = (find_step_dir(run_dir, k) for k in ("03", "04", "05"))
    if s03 and (s03 / "model" / "history.csv").is_file():
        histories["Stage I"] = pd.read_csv(s03 / "model" / "history.csv")
    for h in sorted(s04.glob("**/fold*/history.csv")) if s04 else []:
        histories[f"Stage II {h.parent.name}"] = pd.read_csv(h)
    for name, h in histories.items():
        rates = h["train_images_per_s"].iloc[1:] if len(h) > 1 else h["train_images_per_s"]  # the first compiles
        fits.append({"fit": name, "epochs": len(h), "train_images_per_s": round(float(rates.mean()), 2),
                     "peak_memory_gib": h["peak_memory_gib"].max() if "peak_memory_gib" in h else None,
                     "best_val_macro_auroc": round(float(h["macro_auroc"].max()), 4)})
    if histories:
        training_curves(histories, out / "curves.png")
    curves = {k: h[["epoch", "train_loss", "val_loss", "macro_auroc", "train_images_per_s"]].to_dict("records")
              for k, h in histories.items()}
    real = [f for f in str(cfg.get("real_check_dirs") or "").split(",") if f]
    return {"run_dir": str(run_dir), "steps": steps, "fits": fits, "learning_curves": curves,
            "stage1_val_macro_auroc": fits[0]["best_val_macro_auroc"] if "Stage I" in histories else None,
            "test_macro_auroc": _macro(s05 / "test_auroc_ci.csv") if s05 else None,
            "real_check_macro_auroc": _macro(s05 / "real_auroc.csv") if s05 else None,
            "real_check": "run on " + ", ".join(real) if real else
            f"not run: {'the CPU scale leaves it out' if cfg['device'] == 'cpu' else f'no records at {REAL_RECORDS}'}"}


def chain(device: torch.device, seconds: float, results: dict, args, out: Path) -> dict:
    """Steps 00-05 sized to `seconds`, then their figures."""
    counts = {}
    if device.type == "cuda":
        per = picture_seconds()
        measured = [r for r in results.get("efficiency", []) if isinstance(r, dict) and r.get("images_per_s")]
        rate = 0.7 * max(r["images_per_s"] for r in measured) if measured else 20.0  # the loader and validation
        counts = plan(seconds, rate, per, usable_cores())
        print(f"chain sized to {seconds:.0f} s: {counts}", flush=True)
    profile, overrides = chain_overrides(device, counts, args)
    t = time.perf_counter()
    run_dir = run_pipeline(profile, "00-05", overrides, new_run=True, set_latest=False)
    return {"profile": profile, "overrides": overrides, "plan": counts, "seconds": round(time.perf_counter() - t, 1),
            **chain_report(run_dir, out)}


def run(args) -> Path:
    started = time.perf_counter()
    info = device_info()
    device = resolve_device("auto")
    scale = SCALES["gpu" if device.type == "cuda" else "cpu"]
    results: dict = {"device": info, "started": dt.datetime.now().isoformat(timespec="seconds"),
                     "budget_minutes": args.minutes, "scale": "gpu" if device.type == "cuda" else "cpu (tiny)"}
    out = new_folder(Path(args.out) / dt.date.today().isoformat())
    print(f"device: {info['name']}; budget {args.minutes:g} min; writing {out}", flush=True)

    def save() -> None:
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", report(results))

    run_part(results, "efficiency", efficiency_table, scale, device, info)
    save()
    cfg = DEFAULTS
    run_part(results, "t4_memory", t4_memory, cfg["backbone"], (cfg["image_height"], cfg["image_width"]),
          cfg["batch_size"], cfg["accum_steps"], device)
    save()
    left = args.minutes * 60 - (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        args.working = args.working or tmp
        run_part(results, "chain", chain, device, max(left, 60.0), results, args, out)
    results["seconds"] = round(time.perf_counter() - started, 1)
    save()
    print(f"written: {out / 'results.md'} ({results['seconds']} s)")
    return out


def _table(rows) -> str:
    return pd.DataFrame(rows).to_markdown(index=False) if isinstance(rows, list) and rows else "none"


def report(results: dict) -> str:
    info = results["device"]
    parts = [f"# GPU training, {results['started']}\n",
             f"Device: {info['name']}" + (f", {info['memory_gib']} GiB, capability {info['capability']}"
                                          if info["gpus"] else "")
             + f"; torch {info['torch']}, CUDA {info['cuda']}, Python {info['python']}; budget "
             f"{results['budget_minutes']:g} min, scale {results['scale']}.\n"]
    for name in ("efficiency", "t4_memory", "chain"):
        value = results.get(name)
        parts.append(f"\n## {name.replace('_', ' ')}\n")
        if value is None:
            parts.append("not run: the check stopped before this part")
        elif isinstance(value, list):
            parts.append(_table(value))
        elif name == "chain" and "steps" in value:
            parts.append(_table(value["steps"]) + "\n\n" + _table(value["fits"]))
            parts.append("\n" + "\n".join(f"- {k}: {value.get(k)}" for k in (
                "profile", "plan", "seconds", "stage1_val_macro_auroc", "test_macro_auroc", "real_check_macro_auroc",
                "real_check")))
            parts.append("\n![learning curves](curves.png)")
        else:
            parts.append("\n".join(f"- {k}: {v}" for k, v in value.items() if k != "traceback"))
    if "seconds" in results:
        parts.append(f"\nWhole check: {results['seconds']} s.")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.gpu_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the whole check")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "gpu-train", help="results folder root")
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"), help="torch_compile of the chain")
    ap.add_argument("--backbone-weights", default="none", help="weights of the chain's backbone (none: random)")
    ap.add_argument("--working", default="", help="the chain's working root (empty: a temporary folder)")
    a = add_debug(ap).parse_args(argv)
    return run_cli(lambda a: run(a) and 0, a)


if __name__ == "__main__":
    sys.exit(main())
