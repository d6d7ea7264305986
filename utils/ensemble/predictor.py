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
import time
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
from utils.core.pool import pool_map, resolve_workers
from utils.digitise.reader import SignalReader, blend, reader_problem as signal_problem
from utils.digitise.trace import digitise_turned
from utils.ensemble.page import GATES, PageReader, ecg_verdict, reader_problem
from utils.ensemble.vote import Calibration, near_threshold, noise_problem, vote_scores
from utils.preprocess.cache import PrepSettings, load_models, prepare
from utils.preprocess.orient import find_turn, upright
from utils.preprocess.seen import Seen
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
    upright and what decides that a picture holds an ECG (`orient`: turn_pages, turn_evidence, gate; none: never
    turned, the page reader decides) and the signal reader (`signal`, from utils/digitise/reader.py's reader_entry;
    none: the image model alone)."""
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
        pkg["orient"] = {"turn_pages": bool(orient["turn_pages"]), "turn_evidence": float(orient["turn_evidence"]),
                         "gate": str(orient.get("gate", "reader"))}
    if signal is not None:
        pkg["signal"] = signal
    buf = io.BytesIO()
    torch.save(pkg, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


class PackageError(ValueError):
    """A --model file that is not an ensemble package."""


def add_to_package(path: Path, key: str, value: dict) -> Path:
    """The package with one more entry (what step 05 measures once the package exists: its re-encoding noise),
    checked as a whole and written in place of the old file atomically."""
    pkg = load_package(Path(path))
    pkg[key] = value
    problem = package_problem(pkg)
    if problem:
        raise PackageError(f"{path}: the entry {key!r} would damage the package: {problem}")
    buf = io.BytesIO()
    torch.save(pkg, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


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
        if orient.get("gate", "reader") not in GATES:
            return f"'orient' gate {orient['gate']!r} is not one of {', '.join(GATES)}"
    if "signal" in pkg and signal_problem(pkg["signal"]):
        return signal_problem(pkg["signal"])
    if "noise" in pkg and noise_problem(pkg["noise"]):
        return noise_problem(pkg["noise"])
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

    def __init__(self, package: Path, detector: str = "", device: str = "auto", sam_checkpoint: str = "",
                 folds: bool = True):
        pkg = load_package(Path(package))
        self.package, self.pkg, self.device = Path(package), pkg, resolve_device(device)
        self.spec = (str(package), detector, sam_checkpoint)  # how a worker process builds its own copy
        self.precision = device_precision(self.device)
        self.models = []
        for state in pkg["folds"] if folds else []:  # a preparing worker holds no fold model
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
        if self.signal is not None and self.signal.tracer is not None:  # the trace segmenter beside the models
            self.signal.tracer.to(self.device)
        self.noise = pkg.get("noise")  # each label's re-encoding noise (utils/ensemble/noise.py), when measured

    def prepare(self, img: np.ndarray, signal: bool = True) -> tuple[np.ndarray, dict]:
        """Step 02's preparation of one original picture, with the training strategy and models, after the page is
        stood upright when its traces are sure it is turned (and the package turns pages). The record holds the page
        reader's reading (`page`), the traces' (`orient`), the turn undone (`turn`) and, with a signal reader, the
        picture's leads read back (`digitised`, utils/digitise/trace.py, through the package's trace segmenter when it has
        one; not with `signal` false, for a caller that reads the image model alone)."""
        reading = self.page.read(img) if self.page is not None else {}
        seen = Seen(img)  # the ink and the sheet, found once for the turn, the crop and the digitiser
        orient = find_turn(img, self.orient["turn_evidence"], ink=seen.ink)
        turn = orient["turn_found"] if orient["sure"] and self.orient["turn_pages"] else 0
        prepared, rec = prepare(upright(img, turn) if turn else img, self.prep, self.detector, self.segmenter, seen)
        rec.update(page=ecg_verdict(reading, orient, self.orient.get("gate", "reader")), orient=orient, turn=turn)
        if self.signal is not None and signal:  # read upright, whatever the image model was given
            rec["digitised"] = digitise_turned(img, orient, segmenter=self.signal.tracer, seen=seen)[0]
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

    def margins(self, fold_probs: np.ndarray, signal: np.ndarray | None = None) -> np.ndarray:
        """(n, labels): how far each yes/no decision's own quantity lies from its threshold (>= 0: yes): the
        calibrated probability against the F1 thresholds, or, with a signal reader, the two readers' blend against
        theirs."""
        p = self.calibration.probability(fold_probs)
        if self.signal is None or signal is None:
            return p - np.asarray(self.calibration.thresholds, float)
        return blend(p, signal, self.signal.weights) - self.signal.thresholds

    def near_threshold(self, reading: "Reading") -> list[str]:
        """The labels whose decision lies within the package's re-encoding noise of its threshold ([] when the
        package has no measured noise)."""
        if not self.noise or reading.fold_probs is None:
            return []
        signal = None if reading.signal_probs is None else reading.signal_probs[None]
        return near_threshold(self.margins(reading.fold_probs[:, None], signal)[0], self.noise["band"])

    def verdict(self, reading: "Reading") -> tuple[np.ndarray, np.ndarray]:
        """One reading's ensemble scores and yes/no decisions, (labels,) each."""
        signal = None if reading.signal_probs is None else reading.signal_probs[None]
        scores, decisions = self.ensemble(reading.fold_probs[:, None], signal)
        return scores[0], decisions[0]

    def read(self, pictures: Iterable, tta: bool = False, batch_size: int = 32, keep: bool = False,
             desc: str | None = None, workers: int = 0, signal: bool = True) -> Iterator["Reading"]:
        """Every picture (a file, or a BGR array already in memory) read, prepared, and scored by each fold model, in
        batches of about `batch_size` model inputs; one Reading per picture, in order. `tta` averages meaning-keeping
        views; `keep` holds the picture and its prepared form on the reading (for CAMs); `desc` shows a progress bar;
        `signal` false leaves the signal reader out (nothing digitised: the image model's probabilities alone).
        A file smaller than the package's minimum side, unreadable, or failing in preparation is a reading with its
        error and no probabilities. Each reading's `seconds` is its own: its preparation and its share of the forward
        pass.

        On a CPU, from POOL_FROM pictures on, the pictures are read and prepared in worker processes, one per core
        (`workers`: 0 for one per usable core, 1 for none), while this process runs the fold models on what they
        return. On a GPU the preparation stays here, where its models (page reader, detector, SAM) sit on the GPU."""
        pending: list[tuple[Reading, torch.Tensor | None]] = []

        def flush():
            views = [x for _, x in pending if x is not None]
            t0 = time.perf_counter()
            probs = self.fold_probs(torch.cat(views)) if views else None
            share = (time.perf_counter() - t0) / max(1, sum(len(x) for x in views))
            start = 0
            for reading, x in pending:
                if x is not None:  # the views of one picture averaged
                    reading.fold_probs = probs[:, start:start + len(x)].mean(axis=1)
                    reading.seconds += share * len(x)
                    start += len(x)
            done = [r for r, _ in pending]
            pending.clear()
            return done

        items = list(pictures) if desc or workers != 1 else pictures
        for i, (reading, prepared) in enumerate(self._taken(items, keep, desc, workers, signal)):
            reading.index, x = i, None
            if prepared is not None:
                try:
                    x = torch.cat([self.tensor(v) for v in [prepared] + (tta_views(prepared) if tta else [])])
                except Exception as exc:  # noqa: BLE001 - one picture that fails is its reading's error, never the end
                    reading.error = f"{type(exc).__name__}: {exc}"
            pending.append((reading, x))
            if sum(len(v) for _, v in pending if v is not None) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def _taken(self, items, keep: bool, desc: str | None, workers: int, signal: bool = True
               ) -> Iterator[tuple["Reading", np.ndarray | None]]:
        """take() over the items, here or in a pool of worker processes (see read)."""
        n = len(items) if isinstance(items, list) else 0
        workers = resolve_workers(workers) if self.device.type == "cpu" else 1
        if workers > 1 and n >= POOL_FROM:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the fold models' share here: more threads would spin against the workers
            try:
                yield from pool_map(_take_in_worker, [(self.spec, item, keep, signal) for item in items], workers,
                                    desc=desc or "", progress=bool(desc), serial_below=POOL_FROM)
            finally:
                torch.set_num_threads(threads)
            return
        for item in tqdm(items, desc=desc, unit="img") if desc else items:
            yield self.take(item, keep, signal)

    def take(self, item, keep: bool = False, signal: bool = True) -> tuple["Reading", np.ndarray | None]:
        """One picture (a file or a BGR array) read and prepared, with the signal reader's probabilities: its reading
        (index unset) and its prepared form (None when it failed, the reading then says why)."""
        reading, prepared, t0 = Reading(-1), None, time.perf_counter()
        min_side = self.pkg.get("min_image_side", DEFAULTS["min_image_side"])
        try:
            if isinstance(item, np.ndarray):
                img = item
            else:
                pic = read_image(item, min_side=min_side)
                img, reading.warnings = pic.image, list(pic.warnings)
            prepared, reading.rec = self.prepare(img, signal)
            if self.signal is not None and signal:
                reading.signal_probs = self.signal.probs(reading.rec["digitised"].signals[None])[0]
            if keep:
                reading.image, reading.prepared = img, prepared
        except ImageReadError as exc:
            reading.error, prepared = str(exc), None
        except Exception as exc:  # noqa: BLE001 - one picture that fails is its reading's error, never the end
            reading.error, prepared = f"{type(exc).__name__}: {exc}", None
        reading.seconds = time.perf_counter() - t0
        return reading, prepared

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
    seconds: float = 0.0  # this picture's own time: reading, preparing, digitising and its share of the forward pass


POOL_FROM = 16  # fewer pictures are read here: a worker's start (torch, the package) costs about what 8 pictures do
_WORKER: dict = {}  # in a worker process: the Predictor it works with, built on its first job


def worker_predictor(spec: tuple, folds: bool) -> "Predictor":
    """In a pool's worker: the Predictor of `spec` (Predictor.spec), its own copy of the package on the CPU with one
    thread, with or without the fold models; built on the worker's first job and kept for the next."""
    key = (spec, folds)
    if key not in _WORKER:
        torch.set_num_threads(1)
        _WORKER.clear()
        _WORKER[key] = Predictor(spec[0], spec[1], "cpu", spec[2], folds=folds)
    return _WORKER[key]


def _take_in_worker(job) -> tuple[Reading, np.ndarray | None]:
    """Predictor.take in a pool's worker: its own copy of the package on the CPU without the fold models, one thread."""
    spec, item, keep, signal = job
    return worker_predictor(spec, folds=False).take(item, keep, signal)


def tta_views(img: np.ndarray) -> list[np.ndarray]:
    """Changes that keep an ECG's meaning: a slight zoom-in crop, brighter and darker copies. Never flips."""
    h, w = img.shape[:2]
    dy, dx = int(h * 0.03), int(w * 0.03)
    return [img[dy:h - dy, dx:w - dx], cv2.convertScaleAbs(img, alpha=1.08), cv2.convertScaleAbs(img, alpha=0.92)]
