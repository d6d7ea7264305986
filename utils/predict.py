"""The packaged ensemble and the predict command.

    python -m utils.predict --model model.pt --images FILE_OR_DIR --out preds.csv [--detector best.pt] [--gradcam DIR]

The package is one file of tensors and plain values (loads with torch.load(weights_only=True)): every fold's
weights, the backbone, input size and normalisation, the preprocessing settings, the voting rule, per-label
temperatures and F1 thresholds. ROI crop + CLAHE + the ensemble run on any picture; a file that cannot be read
gets a row with its error.
"""
from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .cache import PrepSettings, prepare
from .config import DEFAULTS
from .data import model_rgb
from .ensemble import apply_temperature, combine
from .io import atomic_write_bytes, atomic_write_text
from .imageio import ImageReadError, read_image
from .metrics import LABELS


def package_model(path: Path, checkpoints: list[Path], prep: PrepSettings, rule: str, temperatures, thresholds,
                  min_side: int = 256) -> Path:
    """Write the ensemble as one weights-only file."""
    folds, meta = [], None
    for ck in checkpoints:
        state = torch.load(ck, map_location="cpu", weights_only=True)
        folds.append(state["model"])
        meta = meta or {"settings": state["settings"], "data_config": state["data_config"]}
    prep_dict = {k: v for k, v in asdict(prep).items() if k not in ("yolo_weights", "config_dir", "sam_checkpoint")}
    pkg = {"format": "ecg-photo-ensemble/1", "labels": list(LABELS), "folds": folds,
           "backbone": meta["settings"]["backbone"], "image_size": [meta["settings"]["image_height"],
                                                                   meta["settings"]["image_width"]],
           "mean": list(meta["data_config"]["mean"]), "std": list(meta["data_config"]["std"]),
           "input_channels": meta["settings"].get("input_channels", "rgb"), "prep": prep_dict, "vote": rule,
           "min_image_side": int(min_side), "temperatures": [float(t) for t in temperatures], "thresholds": [float(t) for t in thresholds]}
    buf = io.BytesIO()
    torch.save(pkg, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


class PackageError(ValueError):
    """A --model file that is not an ensemble package."""


def load_package(path: Path) -> dict:
    """The package's plain tensors and values; anything else is refused in one line, never loaded with code."""
    if not path.is_file():
        raise PackageError(f"--model {path}: no such file (step 05 writes 05_ensemble/model.pt)")
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a random file, a pickle that would run code, a cut download: all the same to the user
        raise PackageError(f"--model {path}: not an ensemble package; it cannot be read as plain tensors and "
                           f"values, and is never loaded in a way that could run code from it") from None
    if not isinstance(pkg, dict) or pkg.get("format") != "ecg-photo-ensemble/1":
        raise PackageError(f"--model {path}: not an ensemble package written by step 05 (no 'ecg-photo-ensemble/1' "
                           f"format mark)")
    return pkg


class Predictor:
    def __init__(self, package: Path, detector: str = "", device: str = "cpu"):
        from .models import build_untrained

        pkg = load_package(Path(package))
        self.pkg, self.device = pkg, torch.device(device)
        self.models = []
        for state in pkg["folds"]:
            m = build_untrained(pkg["backbone"], len(LABELS), pkg["image_size"])
            m.load_state_dict(state)
            self.models.append(m.to(self.device).eval())
        self.prep = PrepSettings(**{**pkg["prep"], "yolo_weights": detector, "seg_method": "classical"})
        self.detector = None
        if detector:
            from .detector import Detector
            self.detector = Detector(Path(detector), Path(detector).parent / "yolo_config", self.prep.yolo_imgsz)
        self.mean = np.array(pkg["mean"], np.float32) * 255
        self.std = np.array(pkg["std"], np.float32) * 255

    def tensor(self, prepared: np.ndarray) -> torch.Tensor:
        img = model_rgb(prepared, tuple(self.pkg["image_size"]), self.pkg.get("input_channels", "rgb"))
        x = (img.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy())[None]

    @torch.no_grad()
    def fold_probs(self, x: torch.Tensor) -> list[np.ndarray]:
        return [torch.sigmoid(m(x.to(self.device))).cpu().numpy() for m in self.models]

    def predict_image(self, img: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        """Calibrated ensemble probabilities (5,), the preprocessing record, and the prepared picture."""
        prepared, rec = prepare(img, self.prep, self.detector)
        raw = combine(self.fold_probs(self.tensor(prepared)), self.pkg["vote"])
        return apply_temperature(raw, self.pkg["temperatures"])[0], rec, prepared


def list_images(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))
    raise FileNotFoundError(f"--images {target}: no such file or folder")


def run(model: Path, images: Path, out: Path, detector: str = "", gradcam: Path | None = None) -> pd.DataFrame:
    pred = Predictor(model, detector)
    root = images if images.is_dir() else images.parent
    rows = []
    for path in list_images(images):
        row = {"id": path.stem, "file": str(path), "warning": ""}
        t0 = time.perf_counter()
        try:
            pic = read_image(path, root=root, min_side=pred.pkg.get("min_image_side", DEFAULTS["min_image_side"]))
            probs, rec, prepared = pred.predict_image(pic.image)
            row.update({k: round(float(p), 6) for k, p in zip(LABELS, probs)})
            row.update({f"{k}_positive": int(p >= t) for k, p, t in zip(LABELS, probs, pred.pkg["thresholds"])})
            row.update(roi_box=rec["box"], roi_method=rec["method"], fallback=rec["fallback"], reason=rec["reason"],
                       error="", warning="; ".join(pic.warnings))
            if gradcam is not None:
                from .cam import save_overlay
                save_overlay(pred.models[0], pred.tensor(prepared), prepared, probs, Path(gradcam) / f"{path.stem}.jpg")
        except ImageReadError as exc:  # one bad file is a row with its error, never the end of the run
            row.update({k: np.nan for k in LABELS}, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - an unexpected failure on one picture is its row too
            row.update({k: np.nan for k in LABELS}, error=f"{type(exc).__name__}: {exc}")
        row["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        rows.append(row)
        print(f"{path.name}: {row['latency_ms']} ms" + (f"  ERROR {row['error']}" if row["error"] else "")
              + (f"  WARNING {row['warning']}" if row["warning"] else ""))
    table = pd.DataFrame(rows)
    atomic_write_text(out, table.to_csv(index=False))
    ok = table[table["error"] == ""]
    if len(ok):
        print(f"{len(ok)} picture(s), median latency {ok['latency_ms'].median():.0f} ms, peak memory "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; {len(table) - len(ok)} error(s)")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the package (model.pt) written by step 05")
    ap.add_argument("--images", type=Path, required=True, help="a picture or a folder of pictures")
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (one row per picture)")
    ap.add_argument("--detector", default="", help="YOLO weights (step 02's best.pt); default: classical finder")
    ap.add_argument("--gradcam", type=Path, help="write a Grad-CAM overlay per picture into this folder")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = ap.parse_args(argv)
    if a.out.exists():
        print(f"error: {a.out} exists; choose another --out (nothing is overwritten)", file=sys.stderr)
        return 2
    try:
        run(a.model, a.images, a.out, a.detector, a.gradcam)
    except Exception as err:  # noqa: BLE001 - a user error is one line; --debug shows where it came from
        if a.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
