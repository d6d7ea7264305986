"""The run's budget, said before the work starts: what it will write to disk and what it will compute.

Disk: images x bytes per artefact, the bytes measured on the first few of each kind (synthetic scans and photos, their
cached versions per strategy, the detector's pictures), checkpoints from the backbone's parameter count; what is drawn
under data_root (outside the saved output on Kaggle: made again from its settings) apart from what the run keeps. Compute:
FLOPs per image from torch's FlopCounterMode x images x epochs, turned into hours on the detected GPU from its
datasheet peak and an achieved fraction (the GPU check's measurement when there is one). The runner prints both and
refuses a run whose disk estimate exceeds disk_budget_gb, naming the settings that would fit.

It sits above the steps (it measures what each would write), beside the runner that calls it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.config import ConfigError
from utils.core.device import forward_flops, peak_tflops
from utils.core.imageio import IMAGE_EXTS
from utils.core.paths import REPO_ROOT, Paths, present_folders, resolve_input_path
from utils.core.pool import usable_cores
from utils.digitise.segment import trace_net
from utils.digitise.trace import digitise_turned
from utils.ensemble.page import HEADS, PageSettings
from utils.preprocess.cache import prepare
from utils.preprocess.orient import find_turn
from utils.preprocess.step import parse_strategies, prep_settings
from utils.synth.generate import SynthSettings, make_sample
from utils.train.models import build_untrained

SAMPLES = 3  # pictures measured per kind
ACHIEVED = 0.3  # share of the datasheet peak a training step reaches, until make gpu-check has measured it
YOLO_RUN_BYTES = 16e6  # YOLOv8n's best.pt and last.pt with its plots and CSVs (about 6 MB per checkpoint)
STEP_BYTES = 2e6  # per step: the executed notebook, figures, tables and logs
DIGITISED_BYTES = 8e3  # one picture's twelve leads in oof_digitised.npz (8 kB measured: three quarters NaN)
COMPETITION_PHOTOS = 15_000  # the challenge's training photos, about
COMPETITION_TEST = 3_219  # its public test photos, which step 02 caches beside the training ones


SECONDS: dict[tuple[str, str], list[float]] = {}  # (step, kind) -> seconds per picture measured while estimating


class BudgetError(ConfigError):
    """A configuration that would not fit the disk budget; the message says what would."""


def _picture_bytes(settings, n: int = SAMPLES, timed: bool = False) -> tuple[float, list[np.ndarray]]:
    """Mean bytes of a synthetic picture (JPEG + annotation) and the decoded pictures, for the cache's measure."""
    import cv2

    sizes, images = [], []
    for i in range(n):
        started = time.perf_counter()
        data, ann, _ = make_sample(settings, i)
        if timed:
            SECONDS.setdefault(("00", settings.style), []).append(time.perf_counter() - started)
        sizes.append(len(data) + len(json.dumps(ann, default=str)))
        images.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    return float(np.mean(sizes)), images


def _cached_bytes(cfg, strategy: str, images: list[np.ndarray]) -> float:
    import cv2

    s = prep_settings({**cfg, "seg_method": "classical"}, strategy, "", Path("."))
    sizes = []
    for img in images:
        started = time.perf_counter()
        sizes.append(len(cv2.imencode(".jpg", prepare(img, s)[0], [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])[1]))
        SECONDS.setdefault(("02", strategy), []).append(time.perf_counter() - started)
    return float(np.mean(sizes))


def external_images(cfg, paths: Paths) -> int:
    """Pictures of the attached sources (competition, scan sets, renders) that step 02 will cache; the challenge's
    count where the competition is the target and not attached (the pre-flight says so)."""
    folders, assumed = [], 0
    if cfg["target"] == "competition":
        try:
            folders.append(resolve_input_path(paths, cfg["competition_dir"], "sample_submission.csv",
                                              "competition data", "competition_dir"))
        except FileNotFoundError:
            assumed = COMPETITION_PHOTOS + COMPETITION_TEST
    if cfg["stage1_scan_dirs"] not in ("", "auto"):
        folders += present_folders(cfg["stage1_scan_dirs"])[0]
    folders += present_folders(cfg["stage1_render_dirs"])[0]
    return assumed + sum(1 for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def _parameters(cfg) -> int:
    return sum(p.numel() for p in build_untrained(cfg["backbone"], 5, (cfg["image_height"], cfg["image_width"]))
               .parameters())


def _page_reader_bytes() -> float:
    state = build_untrained(PageSettings.backbone, HEADS).state_dict()
    return sum(v.numel() for v in state.values()) * 4 + 1e5


def estimate_disk(cfg, paths: Paths) -> pd.DataFrame:
    """One row per artefact: step, what, count, bytes each, total bytes, and whether it stays or is transient."""
    rows = []
    SECONDS.clear()  # the seconds per picture are measured again with the bytes

    def add(step, what, count, each, basis, kept=True, drawn=False):
        rows.append({"step": step, "what": what, "count": int(count), "bytes_each": float(each),
                     "bytes": float(count * each), "kept": kept, "basis": basis,
                     "saved": not drawn or paths.data_saved})  # data_root's sets sit outside Kaggle's saved output

    scan_b, scans = _picture_bytes(SynthSettings.from_config(cfg, "scan"), timed=True)
    photo_b, photos = _picture_bytes(SynthSettings.from_config(cfg, "photo"), timed=True)
    n_scan = cfg["synth_scan_train"]
    n_photo = cfg["synth_photo_train"] + cfg["synth_photo_test"]
    add("00", "synthetic scans", n_scan, scan_b, f"mean of {SAMPLES} rendered", drawn=True)
    add("00", "synthetic photos", n_photo, photo_b, f"mean of {SAMPLES} rendered", drawn=True)
    n_ext = external_images(cfg, paths)
    if cfg["detector"] == "yolo" and cfg["yolo_epochs"] > 0:
        n = cfg["yolo_train_images"]
        det = {style: _picture_bytes(SynthSettings.from_config(cfg, style, 1000, page_width=1100, page_height=850,
                                                               photo_max_side=1400, jpeg_quality=0))[0]
               for style in ("photo", "scan")}
        n_det = {s: max(1, int(n * share)) + max(4, int(n * share * 0.2)) for s, share in (("photo", .7), ("scan", .3))}
        add("02", "detector pictures", sum(n_det.values()), sum(det[s] * n_det[s] for s in det) / sum(n_det.values()),
            f"mean of {SAMPLES} rendered per style", drawn=True)
        side = cfg["yolo_imgsz"] / 1100
        add("02", "YOLO dataset", n * 1.08, det["photo"] * side * side * 1.5, "pictures at yolo_imgsz (scaled)",
            drawn=True)
        add("02", "YOLO training run", 1, YOLO_RUN_BYTES, "two YOLOv8n checkpoints, plots and CSVs")
    for strategy in parse_strategies(cfg["strategies"]):
        each = (_cached_bytes(cfg, strategy, scans) * n_scan + _cached_bytes(cfg, strategy, photos) * (n_photo + n_ext))
        count = n_scan + n_photo + n_ext
        add("02", f"cache {strategy}", count, each / max(count, 1), f"mean of {SAMPLES} prepared per kind")
    params = _parameters(cfg)
    best, last = params * 4 + 1e5, params * 4 * 3 + 1e5  # fp32 weights; last.pt adds AdamW's two moments
    add("03", "Stage I best.pt", 1, best, f"{params / 1e6:.1f} M parameters x 4 bytes")
    add("03-04", "last.pt while a fit runs", 1, last, "weights + AdamW moments; removed when the fit finishes", False)
    add("04", "Stage II best.pt per fold", cfg["n_folds"], best, "one per fold")
    add("05", "the packaged ensemble", 1, best * cfg["n_folds"], "every fold's weights in one file")
    if cfg["page_reader"]:
        reader = _page_reader_bytes()
        add("05", "the page reader (its file and its copy in the package)", 2, reader,
            f"{(reader - 1e5) / 4e6:.1f} M parameters and buffers x 4 bytes")
    if cfg["real_check_dirs"]:
        n_real = sum(len(list(Path(f).rglob("*.hea"))) for f in present_folders(cfg["real_check_dirs"])[0])
        add("05", "real-ECG check renders", n_real, photo_b, "photo-style renders of the real records", drawn=True)
    if cfg["signal_reader"]:
        tracer = _tracer() if str(cfg["segmenter"]).strip() else None  # its time, whatever its weights
        for img in photos:  # the digitiser's time per picture, for the CPU estimate
            started = time.perf_counter()
            digitise_turned(img, find_turn(img, cfg["turn_evidence"]), segmenter=tracer)
            SECONDS.setdefault(("05", "digitise"), []).append(time.perf_counter() - started)
        add("05", "digitised out-of-fold pictures", cfg["synth_photo_train"], DIGITISED_BYTES,
            "twelve leads x 1000 samples, float32, compressed")
    add("00-06", "notebooks, figures, tables, logs", 7, STEP_BYTES, "per step")
    return pd.DataFrame(rows)


def _tracer():
    """A trace segmenter of the shipped architecture, on the GPU when there is one (as the predictor runs it)."""
    import torch

    return trace_net().eval().to("cuda" if torch.cuda.is_available() else "cpu")


def peak_bytes(table: pd.DataFrame) -> float:
    """The most the run's saved output holds at once: everything kept there, plus one transient checkpoint."""
    saved = table[table["saved"]]
    transient = saved.loc[~saved["kept"], "bytes"]
    return float(saved.loc[saved["kept"], "bytes"].sum() + (transient.max() if len(transient) else 0.0))


def drawn_bytes(table: pd.DataFrame) -> float:
    """What the run draws under data_root outside its saved output (Kaggle's /kaggle/temp): not kept by a session."""
    return float(table.loc[~table["saved"], "bytes"].sum())


def disk_needs(table: pd.DataFrame, paths: Paths) -> dict[Path, float]:
    """Bytes needed at the peak under each root the run writes to (the pre-flight holds each against its free disk)."""
    needs = {paths.working_root: peak_bytes(table)}
    if drawn_bytes(table):
        needs[paths.data_root] = drawn_bytes(table)
    return needs


# this machine's measurements before the shipped ones; make gpu-train's (every speed change) before make gpu-check's
GPU_CHECKS = tuple(REPO_ROOT / where / kind for where in ("outputs", "docs") for kind in ("gpu-train", "gpu-check"))


def _newest_results(roots) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for root in roots for p in sorted(Path(root).glob("*/results.json"),
                                                                             reverse=True)]


def achieved_fraction(backbone: str, size: str = "", roots=GPU_CHECKS) -> tuple[float, str]:
    """The share of the fp16 peak a channels-last training step of this backbone reached in the newest GPU
    measurement (make gpu-train's step as a fit runs it, else make gpu-check's), at this input size ("HxW") where it
    was measured, else the median over the sizes it was; else the assumed share."""
    for path, results in _newest_results(roots):
        rows = [r for r in results.get("training", []) + results.get("efficiency", [])
                if isinstance(r, dict) and r.get("backbone") == backbone and r.get("precision") == "fp16"
                and r.get("channels_last") and r.get("share_of_peak") and r.get("as_trained", "setting" not in r)]
        rows = [r for r in rows if r.get("size") == size] or rows
        if rows:
            share = float(np.median([r["share_of_peak"] for r in rows]))
            return share, (f"{share:.1%} of the fp16 peak, as measured on {results['device']['name']} by "
                           f"{path.parent.parent.name} {path.parent.name}")
    return ACHIEVED, f"assumed {ACHIEVED:.0%} of peak until make gpu-check measures it"


def t4_memory_answer(cfg, roots=GPU_CHECKS) -> str:
    """Whether the configuration's training step fits a T4's memory, as make gpu-train measured it (under a T4's
    memory cap on a larger GPU), or that nothing has measured it."""
    want = {"backbone": cfg["backbone"], "size": f"{cfg['image_height']}x{cfg['image_width']}",
            "batch": cfg["batch_size"]}
    for path, results in _newest_results(roots):
        t4 = results.get("t4_memory")
        if isinstance(t4, dict) and "fits" in t4 and all(t4.get(k) == v for k, v in want.items()):
            said = f"fits, peak {t4['peak_memory_gib']} GiB" if t4["fits"] else "DOES NOT FIT (out of memory)"
            return (f"T4 memory at batch {want['batch']}, fp16: {said} of a {t4['cap_gib']} GiB cap, measured on "
                    f"{results['device']['name']} by {path.parent.parent.name} {path.parent.name}")
    return (f"T4 memory at batch {want['batch']}, fp16: not measured for {want['backbone']} at {want['size']} "
            f"(make gpu-train on a GPU measures it)")


def competition_photos(cfg, paths: Paths | None) -> tuple[int, str]:
    """The competition's labelled photos: the attached folder's pictures less the test ids of its sample submission;
    the challenge's count where nothing is attached."""
    if paths is not None and cfg["target"] == "competition":
        try:
            comp = resolve_input_path(paths, cfg["competition_dir"], "sample_submission.csv", "competition data",
                                      "competition_dir")
        except FileNotFoundError:
            comp = None
        if comp is not None:
            pictures = sum(1 for p in comp.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
            test = len(pd.read_csv(comp / "sample_submission.csv"))
            return max(pictures - test, 0), f"counted in {comp}"
    return COMPETITION_PHOTOS, "the challenge's count, about: no competition attached"


def passes(cfg, n_scans: int | None = None, n_target: int | None = None) -> dict[str, tuple[int, int]]:
    """(training images, validation images) of Stage I and Stage II, epochs included."""
    n_scans = cfg["synth_scan_train"] if n_scans is None else n_scans
    if n_target is None:
        n_target = cfg["synth_photo_train"] if cfg["target"] == "synth" else COMPETITION_PHOTOS
    v, k = cfg["stage1_val_fraction"], cfg["n_folds"]
    return {"Stage I": (int(n_scans * (1 - v) * cfg["stage1_epochs"]), int(n_scans * v * cfg["stage1_epochs"])),
            "Stage II": (int(n_target * (k - 1) * cfg["stage2_epochs"]), int(n_target * cfg["stage2_epochs"]))}


def training_images(cfg, n_scans: int | None = None, n_target: int | None = None) -> dict[str, int]:
    """Training-image passes of Stage I and Stage II, epochs included, each validation image counted as a third of
    a pass (forward only)."""
    return {what: int(train + val / 3) for what, (train, val) in passes(cfg, n_scans, n_target).items()}


def estimate_compute(cfg, gpu_name: str | None, gpus: int = 1, n_target: int | None = None) -> pd.DataFrame:
    """Training FLOPs of Stage I and Stage II, and hours on the given GPUs (estimates): training passes spread over
    every GPU, validation on the first only (rank 0 validates while the others wait)."""
    size = (cfg["image_height"], cfg["image_width"])
    fwd = forward_flops(build_untrained(cfg["backbone"], 5, size), size, "cpu")
    peak = peak_tflops(gpu_name or "", "fp16") if gpu_name else None
    fraction, basis = achieved_fraction(cfg["backbone"], f"{size[0]}x{size[1]}")
    rows = []
    for what, (train, val) in passes(cfg, n_target=n_target).items():
        images = int(train + val / 3)
        flops = 3 * fwd * images  # a training pass: forward + backward (about twice the forward); validation a third
        rate = peak * 1e12 * fraction if peak else None
        hours = (3 * fwd * train / max(gpus, 1) + fwd * val) / rate / 3600 if peak else None
        rows.append({"what": what, "training_images": images, "gflop_per_image_forward": float(f"{fwd / 1e9:.4g}"),
                     "pflop": float(f"{flops / 1e15:.4g}"), "hours": hours and float(f"{hours:.4g}"),
                     "on": f"{gpus} x {gpu_name}" if peak else "no GPU of known peak", "basis": basis})
    return pd.DataFrame(rows)


def check_disk(cfg, table: pd.DataFrame) -> None:
    """Refuse a run over disk_budget_gb, naming a Stage I size that would fit."""
    budget = cfg["disk_budget_gb"] * 1e9
    need = peak_bytes(table)
    if not budget or need <= budget:
        return
    per_scan = table.loc[(table["what"] == "synthetic scans") & table["saved"], "bytes_each"].sum() + sum(
        r["bytes_each"] for r in table.to_dict("records") if r["what"].startswith("cache "))
    fixed = need - cfg["synth_scan_train"] * per_scan
    fits = int(max(0, (budget - fixed) / per_scan)) if per_scan else 0
    raise BudgetError(f"the run would write about {need / 1e9:.2f} GB, over disk_budget_gb={cfg['disk_budget_gb']:g}: "
                      f"set synth_scan_train={fits} (or fewer strategies, or a smaller cache_long_side), or raise "
                      f"disk_budget_gb where the disk allows")


def estimate_cpu_steps(table: pd.DataFrame, cores: int) -> pd.DataFrame:
    """Hours of steps 00 (synthesis), 02 (the cache) and 05's digitiser on `cores` CPU cores, from the seconds per
    picture measured while the disk was estimated (one process per core; the detector's training and SAM not
    counted)."""
    rows = []
    for step, what, kinds in (("00", "synthetic scans", [("00", "scan")]), ("00", "synthetic photos", [("00", "photo")])):
        count = int(table.loc[table["what"] == what, "count"].sum())
        secs = float(np.mean([t for k in kinds for t in SECONDS.get(k, [])] or [0.0]))
        rows.append({"step": step, "what": what, "count": count, "seconds_each": secs,
                     "hours": count * secs / max(cores, 1) / 3600})
    if SECONDS.get(("05", "digitise")):  # every synthetic photo (out-of-fold and test) and every real-check render
        count = int(table.loc[table["what"].isin(["synthetic photos", "real-ECG check renders"]), "count"].sum())
        secs = float(np.mean(SECONDS[("05", "digitise")]))
        rows.append({"step": "05", "what": "digitiser (out-of-fold, test, real check)", "count": count,
                     "seconds_each": secs, "hours": count * secs / max(cores, 1) / 3600})
    for r in table[table["what"].str.startswith("cache ")].itertuples():
        secs = float(np.mean(SECONDS.get(("02", r.what.split(" ", 1)[1]), [0.0])))
        rows.append({"step": "02", "what": r.what, "count": int(r.count), "seconds_each": secs,
                     "hours": r.count * secs / max(cores, 1) / 3600})
    return pd.DataFrame(rows)


def sessions_needed(cfg, cpu: pd.DataFrame, compute: pd.DataFrame) -> str:
    """Kaggle sessions of session_hours for the CPU steps and the training (training pauses at an epoch boundary
    before the limit and goes on in the next session, so the hours add up; the rest of the chain is not counted)."""
    train = float(compute["hours"].fillna(0).sum())
    hours = float(cpu["hours"].sum()) + train
    limit = cfg["session_hours"]
    n = max(1, int(np.ceil(hours / limit)))
    return (f"sessions of {limit:g} h: at least {n} ({hours:.1f} h of CPU steps and training; each pauses at an epoch "
            f"boundary before the limit and resumes in the next from the saved output; folds_to_run shares Stage II "
            f"among sessions)" + ("" if train else ": training hours unknown here, not counted"))


def say_budget(cfg, paths: Paths, check: bool = True, disk: pd.DataFrame | None = None) -> str:
    """The budget as text for the run's log; raises BudgetError when the disk estimate is over the budget (with
    check; without, the text says so). `disk`: estimate_disk's table when the caller has it already."""
    import torch

    disk = estimate_disk(cfg, paths) if disk is None else disk
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    n_target, target_basis = (competition_photos(cfg, paths) if cfg["target"] == "competition"
                              else (cfg["synth_photo_train"], "synthetic photos"))
    compute = estimate_compute(cfg, gpu or "T4", torch.cuda.device_count() or 2, n_target)
    cores = usable_cores()
    cpu = estimate_cpu_steps(disk, cores)
    saved = disk[disk["saved"]]
    lines = [f"disk (estimate): about {peak_bytes(disk) / 1e9:.2f} GB at most in the output, "
             f"{saved.loc[saved['kept'], 'bytes'].sum() / 1e9:.2f} GB kept"
             + (f", budget {cfg['disk_budget_gb']:g} GB" if cfg["disk_budget_gb"] else "")
             + (f"; {drawn_bytes(disk) / 1e9:.2f} GB drawn under {paths.data_root} (not saved: a new session draws "
                f"what a step still to run reads)" if drawn_bytes(disk) else "")]
    lines += [f"  {r.step} {r.what}: {r.count} x {r.bytes_each / 1e6:.2f} MB = {r.bytes / 1e9:.2f} GB ({r.basis})"
              + ("" if r.saved else " [drawn, not saved]") for r in disk.itertuples()]
    lines += [f"CPU steps (estimate, {cores} cores here, seconds per picture measured on {SAMPLES} of each kind):"]
    lines += [f"  {r.step} {r.what}: {r.count} x {r.seconds_each:.2f} s = about {r.hours:.2f} h"
              for r in cpu.itertuples()]
    lines += [f"compute (estimate{'' if gpu else ', on two T4s: no GPU here'}; Stage II on {n_target} photos, "
              f"{target_basis}; validation on one GPU):"]
    lines += [f"  {r.what}: {r.training_images} training images, {r.pflop} PFLOP, about {r.hours} h on {r.on} "
              f"({r.basis})" for r in compute.itertuples()]
    lines += [f"  {t4_memory_answer(cfg)}"]
    lines += [sessions_needed(cfg, cpu, compute)]
    try:
        check_disk(cfg, disk)
    except BudgetError as err:
        if check:
            raise
        lines.append(f"OVER THE DISK BUDGET: {err}")
    return "\n".join(lines)
