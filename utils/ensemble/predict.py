"""The packaged ensemble and the predict command.

    python -m utils.ensemble.predict --model model.pt --images FILE_OR_DIR --out preds.csv [--detector best.pt]
        [--sam-checkpoint sam.pth] [--gradcam DIR]

The package is one file of tensors and plain values (loads with torch.load(weights_only=True)): every fold's
weights, the backbone, input size and normalisation, the preprocessing settings, the voting rule, per-label
temperatures and F1 thresholds. Pictures are prepared exactly as the models' training pictures were (the same
strategy, segmentation method and picture -> tensor transform); a file that cannot be read gets a row with its error.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.core.atomic import atomic_write_bytes, atomic_write_text
from utils.core.cam import CAM_METHODS, cam_maps, save_overlay, to_photo
from utils.core.cli import add_debug, run_cli
from utils.core.device import device_precision, resolve_device
from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.ensemble.page import PageReader, reader_problem, upright
from utils.ensemble.vote import Calibration, vote_scores
from utils.pipeline.config import DEFAULTS
from utils.preprocess.cache import PrepSettings, load_models, prepare
from utils.train.dataset import ModelInput

FORMAT = "ecg-photo-ensemble/1"
# machine-specific paths are given when the package is used, never stored in it
LOCAL_PATHS = ("yolo_weights", "config_dir", "sam_checkpoint")


def package_model(path: Path, checkpoints: list[Path], prep: PrepSettings, rule: str, calibration: Calibration,
                  min_side: int = 256, page: dict | None = None) -> Path:
    """Write the ensemble as one weights-only file, with the page reader when one is given."""
    folds, meta = [], None
    for ck in checkpoints:
        state = torch.load(ck, map_location="cpu", weights_only=True)
        folds.append(state["model"])
        meta = meta or {"settings": state["settings"], "data_config": state["data_config"]}
    settings = meta["settings"]
    pkg = {"format": FORMAT, "labels": list(LABELS), "folds": folds, "backbone": settings["backbone"],
           "image_size": [settings["image_height"], settings["image_width"]],
           "mean": list(meta["data_config"]["mean"]), "std": list(meta["data_config"]["std"]),
           "input_channels": settings.get("input_channels", "rgb"),
           "prep": {k: v for k, v in asdict(prep).items() if k not in LOCAL_PATHS}, "vote": rule,
           "min_image_side": int(min_side), "temperatures": [float(t) for t in calibration.temperatures],
           "thresholds": [float(t) for t in calibration.thresholds]}
    if page is not None:
        pkg["page"] = {k: v for k, v in page.items() if k not in ("history", "skipped")}
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
    if not isinstance(pkg, dict) or pkg.get("format") != FORMAT:
        raise PackageError(f"--model {path}: not an ensemble package written by step 05 (no '{FORMAT}' "
                           f"format mark)")
    problem = package_problem(pkg)
    if problem:
        raise PackageError(f"--model {path}: a damaged ensemble package: {problem}")
    return pkg


REQUIRED = ("folds", "backbone", "image_size", "mean", "std", "prep", "vote", "temperatures", "thresholds")


def package_problem(pkg: dict) -> str:
    """What is wrong with a package's keys, shapes and lengths ('' when nothing)."""
    missing = [k for k in REQUIRED if k not in pkg]
    if missing:
        return f"no {', '.join(repr(k) for k in missing)}"
    per_label = {k: pkg[k] for k in ("temperatures", "thresholds")}
    for key, value in per_label.items():
        if not isinstance(value, (list, tuple)) or len(value) != len(LABELS):
            return f"'{key}' has {len(value) if isinstance(value, (list, tuple)) else type(value).__name__} " \
                   f"values, not one per label ({len(LABELS)})"
    if pkg.get("labels", list(LABELS)) != list(LABELS):
        return f"'labels' {pkg['labels']} are not this suite's {list(LABELS)}"
    if not isinstance(pkg["folds"], list) or not pkg["folds"] or not all(isinstance(f, dict) for f in pkg["folds"]):
        return "'folds' holds no model weights"
    size = pkg["image_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return f"'image_size' {size!r} is not [height, width]"
    for key in ("mean", "std"):
        if not isinstance(pkg[key], (list, tuple)) or len(pkg[key]) != 3:
            return f"'{key}' {pkg[key]!r} is not three values"
    try:
        PrepSettings(**{**pkg["prep"]})
    except (TypeError, ValueError) as err:
        return f"'prep' does not describe a preparation: {err}"
    return reader_problem(pkg["page"]) if "page" in pkg else ""


def serving_prep(pkg: dict, detector: str = "", sam_checkpoint: str = "") -> PrepSettings:
    """The package's preprocessing with this machine's model files; a SAM-trained package needs its checkpoint."""
    prep = PrepSettings(**{**pkg["prep"], "yolo_weights": detector,
                           "config_dir": str(Path(detector).parent / "yolo_config") if detector else "",
                           "sam_checkpoint": sam_checkpoint})
    if prep.strategy == "seg_rect" and prep.seg_method == "sam" and not sam_checkpoint:
        raise PackageError("this ensemble was trained on SAM-segmented pictures (seg_rect, seg_method sam): give the "
                           "same SAM checkpoint (--sam-checkpoint / sam_checkpoint) so pictures are prepared alike")
    return prep


class Predictor:
    """The packaged ensemble on a device (auto: the GPU when there is one), with the training's mixed precision."""

    def __init__(self, package: Path, detector: str = "", device: str = "auto", sam_checkpoint: str = ""):
        from utils.train.models import build_untrained

        pkg = load_package(Path(package))
        self.pkg, self.device = pkg, resolve_device(device)
        self.precision = device_precision(self.device)
        self.models = []
        for state in pkg["folds"]:
            m = build_untrained(pkg["backbone"], len(LABELS), pkg["image_size"])
            m.load_state_dict(state)
            self.models.append(m.to(self.device).eval())
        self.prep = serving_prep(pkg, detector, sam_checkpoint)
        self.detector, self.segmenter = load_models(self.prep, str(self.device))  # beside the models
        self.input = ModelInput(pkg["image_size"], pkg["mean"], pkg["std"], pkg.get("input_channels", "rgb"))
        self.calibration = Calibration(tuple(pkg["temperatures"]), tuple(pkg["thresholds"]))
        self.page = PageReader(pkg["page"], self.device) if "page" in pkg else None

    def prepare(self, img: np.ndarray) -> tuple[np.ndarray, dict]:
        """Step 02's preparation of one original picture, with the training strategy and models, after the page
        reader (when the package has one) has stood the page upright; its reading is the record's `page`."""
        reading = self.page.read(img) if self.page is not None else {}
        turn = reading.get("turn", 0)
        prepared, rec = prepare(upright(img, turn) if turn else img, self.prep, self.detector, self.segmenter)
        rec.update(page=reading, turn=turn)
        return prepared, rec

    def tensor(self, prepared: np.ndarray) -> torch.Tensor:
        return self.input(prepared)[None]

    @torch.no_grad()
    def fold_probs(self, x: torch.Tensor) -> list[np.ndarray]:
        """Each fold model's probabilities for a batch (n, 3, h, w)."""
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.precision.enabled):
            return [torch.sigmoid(m(x).float()).cpu().numpy() for m in self.models]

    def photo_cams(self, img: np.ndarray, prepared: np.ndarray, rec: dict, labels, method: str = "gradcam",
                   folds=None) -> tuple[np.ndarray, np.ndarray]:
        """CAMs of these label indices, averaged over the fold models (all, or the indices in `folds`): on the original
        picture (through the crop or rectification) and on the model's input, (len(labels), H, W) each."""
        models = self.models if folds is None else [self.models[k] for k in folds]
        maps = cam_maps(models, self.tensor(prepared).to(self.device), method, labels)
        return np.stack([to_photo(m, rec, (img.shape[1], img.shape[0])) for m in maps]), maps

    def predict_image(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
        """The ensemble's scores under its rule (5,), yes/no per label, the preparation record, the prepared picture."""
        prepared, rec = self.prepare(img)
        fold_probs = np.stack(self.fold_probs(self.tensor(prepared)))
        scores = vote_scores(fold_probs, self.pkg["vote"], self.calibration)[0]
        decisions = self.calibration.decide(self.calibration.probability(fold_probs))[0]
        return scores, decisions, rec, prepared


def list_images(target: Path) -> list[Path]:
    """The files to predict; none is an error that says where it looked."""
    if target.is_file():
        return [target]
    if target.is_dir():
        found = sorted(p for p in target.rglob("*") if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))
        if not found:
            raise FileNotFoundError(f"--images {target}: a folder with no files in it (nothing to predict)")
        return found
    if target.is_symlink():
        raise FileNotFoundError(f"--images {target}: a link to {target.readlink()}, which does not exist")
    raise FileNotFoundError(f"--images {target}: no such file or folder")


def picture_ids(paths: list[Path], root: Path) -> tuple[list[str], dict[str, str]]:
    """One id per file: its name without extension, or, where several files share that name, its path under the
    input folder (extension kept); returns the ids and a warning per renamed id."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    ids, notes = [], {}
    for p in paths:
        if stems[p.stem] == 1:
            ids.append(p.stem)
            continue
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        ids.append(rel)
        notes[rel] = f"{stems[p.stem]} files are named {p.stem!r}: this row's id is its path"
    return ids, notes


def open_output(out: Path) -> Path:
    """Before any work: --out new, its folder writable, and no other predict writing it. Returns the lock file,
    which the caller removes when the table is written."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"{out} exists; choose another --out (nothing is overwritten)")
    folder = out.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"--out {out}: {folder} is not a folder" if folder.exists() else
                                 f"--out {out}: the folder {folder} does not exist")
    lock = folder / f".{out.name}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise FileExistsError(f"--out {out}: another predict is writing it (lock {lock}, "
                              f"{lock.read_text().strip() or 'no pid'}); wait for it, or remove the lock if it "
                              f"died") from None
    except PermissionError:
        raise PermissionError(f"--out {out}: the folder {folder} is not writable") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(f"pid {os.getpid()}\n")
    return lock


@dataclass(frozen=True)
class CamRequest:
    """predict --gradcam: where the overlays go, for which labels (empty: each picture's most probable) and how."""
    folder: Path
    labels: tuple[str, ...] = ()
    method: str = "gradcam"


def write_cams(pred: Predictor, img: np.ndarray, prepared: np.ndarray, rec: dict, scores: np.ndarray, pid: str,
               request: CamRequest) -> list[Path]:
    """The ensemble's CAM (every fold) on the original picture, one file per label asked for."""
    ks = [LABELS.index(k) for k in request.labels] or [int(np.argmax(scores))]
    photo, _ = pred.photo_cams(img, prepared, rec, ks, request.method)
    name = pid.replace(os.sep, "__")
    return [save_overlay(img, m, f"{LABELS[k]} {scores[k]:.2f} ({request.method}, {len(pred.models)} folds)",
                         Path(request.folder) / f"{name}_{LABELS[k]}.jpg") for k, m in zip(ks, photo)]


def cam_request(folder: Path | None, labels: str = "", method: str = "gradcam") -> CamRequest | None:
    """--gradcam's options checked before any picture is read."""
    if folder is None:
        if labels:
            raise ValueError("--gradcam-labels needs --gradcam FOLDER")
        return None
    wanted = tuple(k.strip() for k in labels.split(",") if k.strip())
    unknown = [k for k in wanted if k not in LABELS]
    if unknown:
        raise ValueError(f"--gradcam-labels {', '.join(unknown)}: not a label; choose from {', '.join(LABELS)}")
    if method not in CAM_METHODS:
        raise ValueError(f"--cam-method {method!r}: choose from {', '.join(CAM_METHODS)}")
    return CamRequest(Path(folder), wanted, method)


def page_columns(rec: dict) -> tuple[dict, str]:
    """The page reader's columns of a prediction row (empty without a reader), and why the row's yes/no decisions are
    withheld ('' when they are not)."""
    page = rec.get("page") or {}
    if not page:
        return {"ecg_score": np.nan, "is_ecg": "", "turned": 0, "turn_found": "", "turn_p": np.nan}, ""
    cols = {"ecg_score": page["ecg_score"], "is_ecg": int(page["is_ecg"]), "turned": rec.get("turn", 0),
            "turn_found": page["turn_found"], "turn_p": page["turn_p"]}
    return cols, "" if page["is_ecg"] else \
        f"not an ECG (page reader's score {page['ecg_score']:.2f}): no yes/no decisions"


def predict_one(pred: Predictor, path: Path, root: Path, gradcam: CamRequest | None, pid: str | None = None,
                note: str = "") -> dict:
    row = {"id": pid or path.stem, "file": str(path), "warning": ""}
    t0 = time.perf_counter()
    try:
        pic = read_image(path, root=root, min_side=pred.pkg.get("min_image_side", DEFAULTS["min_image_side"]))
        scores, decisions, rec, prepared = pred.predict_image(pic.image)
        page, withheld = page_columns(rec)
        row.update({k: round(float(p), 6) for k, p in zip(LABELS, scores)})
        row.update({f"{k}_positive": "" if withheld else int(d) for k, d in zip(LABELS, decisions)}, **page)
        row.update(roi_box=rec["box"], roi_method=rec["method"], fallback=rec["fallback"], reason=rec["reason"],
                   error="", warning="; ".join(filter(None, [note, withheld, *pic.warnings])))
        if gradcam is not None:
            write_cams(pred, pic.image, prepared, rec, scores, row["id"], gradcam)
    except ImageReadError as exc:  # one bad file is a row with its error, never the end of the run
        row.update({k: np.nan for k in LABELS}, error=str(exc), warning=note)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure on one picture is its row too
        row.update({k: np.nan for k in LABELS}, error=f"{type(exc).__name__}: {exc}")
    row["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return row


def run(model: Path, images: Path, out: Path, detector: str = "", gradcam: Path | CamRequest | None = None,
        sam_checkpoint: str = "", device: str = "auto") -> pd.DataFrame:
    if gradcam is not None and not isinstance(gradcam, CamRequest):
        gradcam = cam_request(gradcam)
    paths = list_images(images)  # before anything is opened or written
    lock = open_output(out)
    try:
        return _run(model, images, paths, out, detector, gradcam, sam_checkpoint, device)
    finally:
        lock.unlink(missing_ok=True)


def _run(model, images, paths, out, detector, gradcam, sam_checkpoint, device) -> pd.DataFrame:
    pred = Predictor(model, detector, device, sam_checkpoint)
    root = images if images.is_dir() else images.parent
    ids, notes = picture_ids(paths, root)
    rows = []
    for path, pid in zip(paths, ids):
        row = predict_one(pred, path, root, gradcam, pid, notes.get(pid, ""))
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
    ap = argparse.ArgumentParser(prog="python -m utils.ensemble.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the package (model.pt) written by step 05")
    ap.add_argument("--images", type=Path, required=True, help="a picture or a folder of pictures")
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (one row per picture)")
    ap.add_argument("--detector", default="", help="YOLO weights (step 02's best.pt); default: classical finder")
    ap.add_argument("--sam-checkpoint", default="", help="SAM checkpoint, for a package trained on SAM segmentation")
    ap.add_argument("--gradcam", type=Path, help="write the ensemble's CAM on each original picture into this folder")
    ap.add_argument("--gradcam-labels", default="", help="labels to draw, comma-separated (default: the most probable)")
    ap.add_argument("--cam-method", default="gradcam", help=f"one of {', '.join(CAM_METHODS)}")
    ap.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    return run_cli(_predict, add_debug(ap).parse_args(argv))


def _predict(a) -> int:
    run(a.model, a.images, a.out, a.detector, cam_request(a.gradcam, a.gradcam_labels, a.cam_method), a.sam_checkpoint,
        a.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
