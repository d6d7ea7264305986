"""The packaged ensemble (one weights-only file) and the Predictor that serves it: the one inference path.

The package is one file of tensors and plain values (loads with torch.load(weights_only=True)): every fold's
weights, the backbone, input size and normalisation, the preprocessing settings, the voting rule, per-label
temperatures and F1 thresholds, the page reader, and whether a turned page is stood upright. `Predictor.read` is how
every caller turns pictures into probabilities (step 05's test set, the real-ECG check, the robustness sets, the
predict command, the explorer and the benchmarks): each picture read with one rule (a picture that cannot be read or
prepared is a reading with its error, never an exception), stood upright when its traces are sure it is turned,
prepared exactly as the models' training pictures were (the same strategy, segmentation method and picture -> tensor
transform), batched on the device, through the forward pass training validates with.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from utils.core.progress import tqdm

from utils.core.atomic import atomic_write_bytes
from utils.core.cam import cam_maps, to_photo
from utils.core.config import DEFAULTS
from utils.core.device import device_precision, resolve_device
from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.digitise.reader import SignalReader, reader_problem as signal_problem
from utils.digitise.trace import digitise_turned
from utils.ensemble.page import PageReader, reader_problem
from utils.ensemble.vote import Calibration, vote_scores
from utils.preprocess.cache import PrepSettings, load_models, prepare
from utils.preprocess.orient import find_turn, upright
from utils.train.dataset import ModelInput
from utils.train.engine import probabilities
from utils.train.models import build_untrained

FORMAT = "ecg-photo-ensemble/1"
NEVER_TURN = {"turn_pages": False, "turn_evidence": float("inf")}  # a package that says nothing of turning
# machine-specific paths are given when the package is used, never stored in it
LOCAL_PATHS = ("yolo_weights", "config_dir", "sam_checkpoint")


def package_model(path: Path, checkpoints: list[Path], prep: PrepSettings, rule: str, calibration: Calibration,
                  min_side: int = 256, page: dict | None = None, orient: dict | None = None,
                  signal: dict | None = None) -> Path:
    """Write the ensemble as one weights-only file, with the page reader when one is given, how pages are stood
    upright (`orient`: turn_pages, turn_evidence; none: never turned) and the signal reader (`signal`, from
    utils/digitise/reader.py's reader_entry; none: the image model alone)."""
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
    if orient is not None:
        pkg["orient"] = {"turn_pages": bool(orient["turn_pages"]), "turn_evidence": float(orient["turn_evidence"])}
    if signal is not None:
        pkg["signal"] = signal
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
    if "orient" in pkg:
        orient = pkg["orient"]
        if not (isinstance(orient, dict) and isinstance(orient.get("turn_pages"), bool)
                and isinstance(orient.get("turn_evidence"), (int, float)) and orient["turn_evidence"] >= 0):
            return f"'orient' {orient!r} is not {{'turn_pages': a bool, 'turn_evidence': a number >= 0}}"
    if "signal" in pkg and signal_problem(pkg["signal"]):
        return signal_problem(pkg["signal"])
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
        pkg = load_package(Path(package))
        self.package, self.pkg, self.device = Path(package), pkg, resolve_device(device)
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
        self.orient = dict(pkg.get("orient", NEVER_TURN))
        self.signal = SignalReader(pkg["signal"]) if "signal" in pkg else None

    def prepare(self, img: np.ndarray) -> tuple[np.ndarray, dict]:
        """Step 02's preparation of one original picture, with the training strategy and models, after the page is
        stood upright when its traces are sure it is turned (and the package turns pages). The record holds the page
        reader's reading (`page`), the traces' (`orient`), the turn undone (`turn`) and, with a signal reader, the
        picture's leads read back (`digitised`, utils/digitise/trace.py)."""
        reading = self.page.read(img) if self.page is not None else {}
        orient = find_turn(img, self.orient["turn_evidence"])
        turn = orient["turn_found"] if orient["sure"] and self.orient["turn_pages"] else 0
        prepared, rec = prepare(upright(img, turn) if turn else img, self.prep, self.detector, self.segmenter)
        rec.update(page=reading, orient=orient, turn=turn)
        if self.signal is not None:
            rec["digitised"] = digitise_turned(img, orient)[0]  # read upright, whatever the image model was given
        return prepared, rec

    def tensor(self, prepared: np.ndarray) -> torch.Tensor:
        return self.input(prepared)[None]

    def fold_probs(self, x: torch.Tensor) -> np.ndarray:
        """Each fold model's probabilities for a batch of model inputs (n, 3, h, w): (folds, n, labels)."""
        return probabilities(self.models, x, self.device, self.precision.dtype)

    def photo_cams(self, img: np.ndarray, prepared: np.ndarray, rec: dict, labels, method: str = "gradcam",
                   folds=None) -> tuple[np.ndarray, np.ndarray]:
        """CAMs of these label indices, averaged over the fold models (all, or the indices in `folds`): on the original
        picture (through the crop or rectification) and on the model's input, (len(labels), H, W) each."""
        models = self.models if folds is None else [self.models[k] for k in folds]
        maps = cam_maps(models, self.tensor(prepared).to(self.device), method, labels)
        return np.stack([to_photo(m, rec, (img.shape[1], img.shape[0])) for m in maps]), maps

    def decide(self, fold_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ensemble's scores under its rule and the yes/no decisions, (n, labels) each, from (folds, n, labels)."""
        return (vote_scores(fold_probs, self.pkg["vote"], self.calibration),
                self.calibration.decide(self.calibration.probability(fold_probs)))

    def ensemble(self, fold_probs: np.ndarray, signal: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The package's scores and decisions, (n, labels) each: the image model's under its rule, or, with a signal
        reader, its calibrated probability blended with the signal reader's (`signal`, (n, labels), NaN rows where a
        picture was not digitised: the image model's alone there)."""
        if self.signal is None or signal is None:
            return self.decide(fold_probs)
        return self.signal.ensemble(self.calibration.probability(fold_probs), signal)

    def verdict(self, reading: "Reading") -> tuple[np.ndarray, np.ndarray]:
        """One reading's ensemble scores and yes/no decisions, (labels,) each."""
        signal = None if reading.signal_probs is None else reading.signal_probs[None]
        scores, decisions = self.ensemble(reading.fold_probs[:, None], signal)
        return scores[0], decisions[0]

    def read(self, pictures: Iterable, tta: bool = False, batch_size: int = 32, keep: bool = False,
             desc: str | None = None) -> Iterator["Reading"]:
        """Every picture (a file, or a BGR array already in memory) read, prepared, and scored by each fold model, in
        batches of about `batch_size` model inputs; one Reading per picture, in order. `tta` averages meaning-keeping
        views; `keep` holds the picture and its prepared form on the reading (for CAMs); `desc` shows a progress bar.
        A file smaller than the package's minimum side, unreadable, or failing in preparation is a reading with its
        error and no probabilities."""
        min_side = self.pkg.get("min_image_side", DEFAULTS["min_image_side"])
        pending: list[tuple[Reading, torch.Tensor | None]] = []

        def flush():
            views = [x for _, x in pending if x is not None]
            probs = self.fold_probs(torch.cat(views)) if views else None
            start = 0
            for reading, x in pending:
                if x is not None:  # the views of one picture averaged
                    reading.fold_probs = probs[:, start:start + len(x)].mean(axis=1)
                    start += len(x)
            done = [r for r, _ in pending]
            pending.clear()
            return done

        items = list(pictures) if desc else pictures
        for i, item in enumerate(tqdm(items, desc=desc, unit="img") if desc else items):
            reading, x = Reading(i), None
            try:
                if isinstance(item, np.ndarray):
                    img = item
                else:
                    pic = read_image(item, min_side=min_side)
                    img, reading.warnings = pic.image, list(pic.warnings)
                prepared, reading.rec = self.prepare(img)
                if self.signal is not None:
                    reading.signal_probs = self.signal.probs(reading.rec["digitised"].signals[None])[0]
                x = torch.cat([self.tensor(v) for v in [prepared] + (tta_views(prepared) if tta else [])])
                if keep:
                    reading.image, reading.prepared = img, prepared
            except ImageReadError as exc:
                reading.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one picture that fails is its reading's error, never the end
                reading.error = f"{type(exc).__name__}: {exc}"
            pending.append((reading, x))
            if sum(len(v) for _, v in pending if v is not None) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def read_one(self, picture, keep: bool = True) -> "Reading":
        """One picture through read(); raises its error (for callers that hold one picture they know is good)."""
        reading = next(self.read([picture], keep=keep))
        if reading.error:
            raise ImageReadError(reading.error)
        return reading


@dataclass
class Reading:
    """One picture's way through the ensemble: each fold's probabilities (folds, labels; None when it failed), the
    signal reader's, the preparation record (box, method, fallback, page reader, leads read back), warnings and the
    error; with keep, the picture and its prepared form."""
    index: int
    fold_probs: np.ndarray | None = None
    rec: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    image: np.ndarray | None = None
    prepared: np.ndarray | None = None
    signal_probs: np.ndarray | None = None  # the signal reader's (labels,), NaN when the picture was not digitised


def tta_views(img: np.ndarray) -> list[np.ndarray]:
    """Changes that keep an ECG's meaning: a slight zoom-in crop, brighter and darker copies. Never flips."""
    h, w = img.shape[:2]
    dy, dx = int(h * 0.03), int(w * 0.03)
    return [img[dy:h - dy, dx:w - dx], cv2.convertScaleAbs(img, alpha=1.08), cv2.convertScaleAbs(img, alpha=0.92)]
