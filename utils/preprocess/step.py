"""Step 02: train (or load) the paper detector, measure it, and cache every strategy asked for."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from utils.core.figures import before_after_grid, image_strip
from utils.core.keys import settings_key, split_list
from utils.core.pool import usable_cores
from utils.preprocess.cache import PrepSettings, build_cache, find_sheet
from utils.preprocess.detector import Detector, export_dataset, train_detector
from utils.preprocess.roi import STRATEGIES, box_iou, classical_detect
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings


def parse_strategies(text: str) -> list[str]:
    out = split_list(text)
    bad = [t for t in out if t not in STRATEGIES]
    if bad or not out:
        raise ValueError(f"strategies {text!r}: choose from {STRATEGIES}")
    return out


def seg_method(cfg) -> str:
    if cfg["seg_method"] == "sam" and not cfg["sam_checkpoint"]:
        raise FileNotFoundError("seg_method 'sam' needs sam_checkpoint (a .pth file); none is downloaded here. "
                                "Set sam_checkpoint, or seg_method to classical")
    if cfg["seg_method"] == "auto":
        return "sam" if cfg["sam_checkpoint"] else "classical"
    return cfg["seg_method"]


def detector_data(cfg, paths) -> dict[str, Path]:
    """Synthetic photos (70%) and scans (30%) with exact paper boxes; a held-out test split of each."""
    n = cfg["yolo_train_images"]
    out = {}
    for style, share in (("photo", 0.7), ("scan", 0.3)):
        n_train, n_test = max(1, int(n * share)), max(4, int(n * share * 0.2))
        settings = SynthSettings.from_config(cfg, style, 1000, page_width=1100, page_height=850, photo_max_side=1400,
                                             jpeg_quality=0)
        key = settings_key(settings.to_dict(), 8)
        folder = paths.data_root / f"detector-{style}-{n_train}-{n_test}-{key}"  # new settings, new folder
        generate_dataset(folder, settings, n_train=n_train, n_test=n_test,
                         workers=cfg["num_workers"])
        out[style] = folder
    return out


def get_detector_weights(cfg, paths, step_dir: Path, data: dict[str, Path]) -> str:
    """'' for classical only; given weights as they are (yolo_epochs 0); else weights trained here."""
    if cfg["detector"] == "classical":
        return ""
    if cfg["yolo_epochs"] == 0:
        if not cfg["yolo_weights"] or not Path(cfg["yolo_weights"]).is_file():
            raise FileNotFoundError("yolo_epochs is 0 but yolo_weights is not an existing file: set yolo_weights")
        return cfg["yolo_weights"]
    best = trained_detector(step_dir)
    if best.is_file():  # a resumed step keeps the detector it trained
        return str(best)

    # exported beside the pictures it is made of (data_root: drawn again, not kept with the run); reused when whole
    folder = paths.data_root / ("yolo-" + settings_key({"from": sorted(Path(f).name for f in data.values()),
                                                        "imgsz": cfg["yolo_imgsz"], "seed": cfg["seed"]}, 8))
    yaml = folder / "data.yaml"
    if not yaml.is_file():  # written last by export_dataset
        yaml = export_dataset(list(data.values()), folder, n=10 ** 9, imgsz=cfg["yolo_imgsz"], seed=cfg["seed"])
    device = "cpu" if cfg["device"] in ("cpu", "auto") and not _cuda() else "0"
    return str(train_detector(yaml, step_dir / "yolo", cfg["yolo_model"], cfg["yolo_weights"], cfg["yolo_epochs"],
                              cfg["yolo_imgsz"], device=device, seed=cfg["seed"],
                              workers=0 if device == "cpu" else min(8, usable_cores())))


def trained_detector(step_dir: Path) -> Path:
    """Where step 02 keeps the detector it trains."""
    return Path(step_dir) / "yolo" / "detector" / "weights" / "best.pt"


def detector_for(cfg, step_dir: Path) -> str:
    """The detector weights step 02 used, for every later step that prepares a picture ('' : classical finder)."""
    if cfg["detector"] == "classical":
        return ""
    if cfg["yolo_epochs"] == 0:
        return cfg["yolo_weights"]
    best = trained_detector(step_dir)
    return str(best) if best.is_file() else ""


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def truth_box(ann: dict) -> list[float]:
    cx, cy, bw, bh = ann["paper_box_yolo"]
    w, h = ann["image_size"]
    return [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]


def evaluate_detection(data: dict[str, Path], settings: PrepSettings, weights: str, config_dir: Path) -> pd.DataFrame:
    """IoU against the synthesizer's truth on held-out photos and scans: detector, classical, and the choice."""
    det = Detector(Path(weights), config_dir, settings.yolo_imgsz) if weights else None
    rows = []
    for style, folder in data.items():
        for path in sorted((folder / "annotations").glob("*.json")):
            ann = json.loads(path.read_text())
            if ann.get("split") != "test":
                continue
            img = cv2.imread(str(folder / ann["image"]))
            gt = truth_box(ann)
            row = {"style": style, "image": str(folder / ann["image"])}
            if det is not None:
                y = det(img)
                row.update(yolo_iou=box_iou(y["box"], gt) if y["box"] else 0.0, yolo_conf=y["confidence"])
            c = classical_detect(img)
            row.update(classical_iou=box_iou(c["box"], gt) if c["box"] else 0.0, classical_conf=c["confidence"])
            chosen = find_sheet(img, settings, det)
            used = chosen["box"] or [0, 0, img.shape[1], img.shape[0]]  # no sheet found: the whole picture is kept
            row.update(chosen=chosen["method"], chosen_iou=box_iou(used, gt))
            if c["corners"] is not None:
                row["corner_err_px"] = float(np.abs(np.array(c["corners"]) - np.array(ann["paper_corners"])).max())
            rows.append(row)
    return pd.DataFrame(rows)


def iou_summary(ev: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("yolo_iou", "classical_iou", "chosen_iou", "corner_err_px") if c in ev]
    rows = []
    for style, part in ev.groupby("style"):
        for c in cols:
            v = part[c].dropna()
            rows.append({"style": style, "measure": c, "n": len(v), "median": round(float(v.median()), 3),
                         "p5": round(float(v.quantile(0.05 if "iou" in c else 0.95)), 3)})
    return pd.DataFrame(rows)


def prep_settings(cfg, strategy: str, weights: str, config_dir: Path) -> PrepSettings:
    return PrepSettings(strategy=strategy, long_side=cfg["cache_long_side"], margin=cfg["crop_margin"],
                        crop_to=cfg["crop_to"],
                        clahe_clip=cfg["clahe_clip"], clahe_tiles=cfg["clahe_tiles"], yolo_weights=weights,
                        yolo_imgsz=cfg["yolo_imgsz"], yolo_conf=cfg["yolo_conf"], classical_conf=cfg["classical_conf"],
                        seg_method=seg_method(cfg), sam_checkpoint=cfg["sam_checkpoint"],
                        sam_model_type=cfg["sam_model_type"], min_quad_cover=cfg["min_quad_cover"],
                        config_dir=str(config_dir))


def cache_strategies(manifest: pd.DataFrame, cfg, weights: str, step_dir: Path) -> dict[str, pd.DataFrame]:
    """One cache folder per strategy under the step; returns each strategy's record table."""
    out = {}
    for strategy in parse_strategies(cfg["strategies"]):
        s = prep_settings(cfg, strategy, weights, step_dir / "yolo" / "yolo_config")
        out[strategy] = build_cache(manifest[["id", "image"]], s, step_dir / "cache" / strategy,
                                    workers=cfg["num_workers"], model_device="cpu" if cfg["device"] == "cpu"
                                    or not _cuda() else "cuda" if cfg["device"] == "auto" else cfg["device"])
    return out


def qa_tables(tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per strategy counts (cached, fallbacks by kind, failures), and every fallback or failure with its reason."""
    summary, issues = [], []
    for strategy, t in tables.items():
        ok = t["ok"].astype(bool)
        fb = t["fallback"].fillna("") if "fallback" in t else pd.Series("", index=t.index)
        summary.append({"strategy": strategy, "images": len(t), "cached": int(ok.sum()), "failed": int((~ok).sum()),
                        "fallbacks": int((fb != "").sum()),
                        "methods": t.loc[ok, "method"].value_counts().to_dict() if "method" in t else {}})
        bad = t[(~ok) | (fb != "")]
        for r in bad.to_dict("records"):
            issues.append({"strategy": strategy, "id": r["id"], "image": r["source_image"],
                           "fallback": r.get("fallback", ""), "reason": r.get("reason", "") or r.get("error", "")})
    return pd.DataFrame(summary), pd.DataFrame(issues, columns=["strategy", "id", "image", "fallback", "reason"])


def worst_detections(evaluation: pd.DataFrame, path: Path, n: int = 8) -> Path:
    """The n pictures whose chosen box overlaps the true sheet least, with their IoU and method."""
    worst = evaluation.nsmallest(n, "chosen_iou")
    return image_strip(worst["image"].tolist(), [f"{r.style} IoU {r.chosen_iou:.2f} ({r.chosen})"
                                                 for r in worst.itertuples()], path)


def before_after_figures(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Originals beside their cached versions, one figure per strategy (before_after_<strategy>.png)."""
    return [before_after_grid(table, Path(folder) / f"before_after_{s}.png", title=s) for s, table in tables.items()]


def fallback_figure(issues: pd.DataFrame, path: Path, n: int = 12) -> Path:
    """The first n pictures that fell back or failed, each with its strategy and what happened."""
    shown = issues.head(n)
    return image_strip(shown["image"].tolist(), [f"{r.strategy}: {(r.fallback or 'failed')}"
                                                 for r in shown.itertuples()], path)
