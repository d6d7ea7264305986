"""Step 05's signal reader: trained on simulated signals, its blend with the image model chosen on the out-of-fold
pictures, packed as the package's 'signal' entry (utils/digitise/reader.py).

The digitiser follows the trace segmenter's mask (`segmenter`: one trained here, `segmenter.pt`, once per setting, or
a given file; packed in the signal entry, so serving reads pictures as the blend was chosen on) or the classical ink.
The out-of-fold pictures are digitised as the predictor digitises any picture (stood upright by their traces, then
utils/digitise/trace.py), in parallel, and kept (`oof_digitised.npz`, with the digitiser they were read by), so a step
that is run again reads them once. The reader is trained once per setting (`signal_reader.pt`, its settings beside
its tensors).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.core.atomic import atomic_write_bytes
from utils.core.config import ConfigError
from utils.core.device import resolve_device
from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.core.metrics import label_aurocs
from utils.core.paths import REPO_ROOT
from utils.core.pool import pool_map
from utils.digitise import segment as seg
from utils.digitise.reader import blend, choose_weights, read_signals, reader_entry, reader_from_state, train_reader
from utils.digitise.trace import blank, digitise_turned
from utils.ensemble.evaluate import oof_arrays
from utils.ensemble.vote import f1_thresholds
from utils.preprocess.orient import find_turn


def digitise_file(job: tuple) -> tuple[np.ndarray, str]:
    """One picture file's leads (NaN where not read) and why it was not read ('' when it was): job (path, turn
    evidence[, segmenter file])."""
    path, evidence, segmenter = (*job, "")[:3]
    try:
        img = read_image(path).image
    except ImageReadError as exc:
        return blank(), str(exc)
    d, _ = digitise_turned(img, find_turn(img, evidence), segmenter=seg.loaded(segmenter) if segmenter else None)
    return d.signals, d.problem


def digitise_files(paths: list[str], evidence: float, cache: Path, workers: int = 0, segmenter: str = ""
                   ) -> tuple[np.ndarray, list[str]]:
    """(n, 12, 1000) leads of the pictures and the problems, kept in `cache` for these paths and this digitiser
    (the segmenter file's size and time, or the classical ink)."""
    cache = Path(cache)
    digitiser = f"segmenter {Path(segmenter).stat().st_size} {Path(segmenter).stat().st_mtime_ns}" if segmenter \
        else "classical"
    if cache.is_file():
        kept = np.load(cache, allow_pickle=False)
        if list(kept["paths"]) == list(paths) and str(kept.get("digitiser", "classical")) == digitiser:
            return kept["signals"], list(kept["problems"])
    out = list(pool_map(digitise_file, [(p, evidence, segmenter) for p in paths], workers, desc="digitise"))
    signals, problems = np.stack([o[0] for o in out]), [o[1] for o in out]
    buf = io.BytesIO()
    np.savez_compressed(buf, signals=signals, problems=np.array(problems), paths=np.array(paths),
                        digitiser=np.array(digitiser))
    atomic_write_bytes(cache, buf.getvalue())
    return signals, problems


def segmenter_for(cfg, step_dir: Path) -> tuple[Path | None, dict]:
    """The trace segmenter's file (None: the classical ink) and what it was trained on. `segmenter: train` trains
    one with the configuration's settings (kept in `segmenter.pt`, trained again only when they change); a path
    is checked and used as it is."""
    choice = str(cfg.segmenter).strip()
    if not choice:
        return None, {}
    if choice != "train":
        path = Path(choice) if Path(choice).is_absolute() else REPO_ROOT / choice
        try:
            return path, seg.load(path)[1]
        except seg.SegmenterError as err:
            raise ConfigError(f"segmenter: {err} (give a file of python -m utils.digitise.segment, train, or empty "
                              f"for the classical ink)") from None
    settings = {"pictures": int(cfg.segmenter_pictures), "steps": int(cfg.segmenter_steps), "seed": int(cfg.seed),
                "check": int(cfg.segmenter_check)}
    path = Path(step_dir) / "segmenter.pt"
    if path.is_file():
        try:
            _, info = seg.load(path)
        except seg.SegmenterError as err:
            print(f"{err}: training the trace segmenter again")
            info = {}
        if info.get("settings") == settings:
            return path, info
        if info:
            print(f"{path} was trained with other settings: training the trace segmenter again")
    device = resolve_device(cfg.device)
    model, info = seg.train(settings["pictures"], settings["steps"], settings["seed"], device=str(device),
                            workers=int(cfg.num_workers))
    if settings["check"]:
        info["check"] = seg.evaluate(model, settings["check"], settings["seed"] + 1000, int(cfg.num_workers))
    info["settings"] = settings
    seg.save(model, info, path)
    print(f"trace segmenter: {info['pictures']} pictures, {info['steps']} steps in {info['trained_s']:.0f} s"
          + (f"; IoU {info['check']['iou']:.3f} on {settings['check']} new pictures" if settings["check"] else ""))
    return path, info


def reader_model(cfg, path: Path):
    """The signal reader trained with the configuration's settings, or read back from `path` when it was."""
    settings = {"records": int(cfg.signal_records), "epochs": int(cfg.signal_epochs), "seed": int(cfg.seed)}
    path = Path(path)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("settings") == settings:
            return reader_from_state(state["state"])
        print(f"{path} was trained with other settings: training the signal reader again")
    model = train_reader(settings["records"], settings["epochs"], settings["seed"])
    buf = io.BytesIO()
    torch.save({"settings": settings, "state": model.state_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return model


def signal_for(cfg, oof: pd.DataFrame, manifest: pd.DataFrame, oof_calibrated: np.ndarray, step_dir: Path
               ) -> tuple[dict | None, pd.DataFrame]:
    """The package's 'signal' entry (None when signal_reader is false) and a table per label: the out-of-fold
    AUROC of the image model alone, the signal reader alone, the blend at the weight chosen, and that weight."""
    if not cfg.signal_reader:
        return None, pd.DataFrame()
    model = reader_model(cfg, Path(step_dir) / "signal_reader.pt")
    segmenter, _ = segmenter_for(cfg, step_dir)
    images = manifest.set_index("id").loc[oof["id"], "image"].tolist()
    signals, problems = digitise_files(images, cfg.turn_evidence, Path(step_dir) / "oof_digitised.npz",
                                       segmenter=str(segmenter or ""))
    signal = read_signals(model, signals)
    signal[np.isnan(signals).all(axis=(1, 2))] = np.nan
    _, y = oof_arrays(oof)
    weights, _ = choose_weights(oof_calibrated, signal, y)
    blended = blend(oof_calibrated, signal, weights)
    thresholds = f1_thresholds(blended, y)
    table = pd.DataFrame({"label": LABELS, "image model": label_aurocs(y, oof_calibrated),
                          "signal reader": label_aurocs(y, np.where(np.isnan(signal), 0.5, signal)),
                          "ensemble": label_aurocs(y, blended), "weight": weights}).round(4)
    read = sum(not p for p in problems)
    print(f"signal reader: {len(images)} out-of-fold pictures digitised "
          f"({'through the trace segmenter' if segmenter else 'on the classical ink'}), {read} read "
          f"({len(images) - read} not: the image model alone there)")
    entry = reader_entry(model, weights, thresholds, cfg.signal_records)
    if segmenter:
        entry["segmenter"] = seg.entry(*seg.load(segmenter))
    return entry, table
