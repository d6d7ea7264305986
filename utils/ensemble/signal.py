"""Step 05's signal reader: trained on simulated signals, its blend with the image model chosen on the out-of-fold
pictures, packed as the package's 'signal' entry (utils/digitise/reader.py).

The out-of-fold pictures are digitised as the predictor digitises any picture (stood upright by their traces, then
utils/digitise/trace.py), in parallel, and kept (`oof_digitised.npz`), so a step that is run again reads them once.
The reader is trained once per setting (`signal_reader.pt`, its settings beside its tensors).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.core.atomic import atomic_write_bytes
from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.core.metrics import label_aurocs
from utils.core.pool import pool_map
from utils.digitise.reader import blend, choose_weights, read_signals, reader_entry, reader_from_state, train_reader
from utils.digitise.trace import blank, digitise_turned
from utils.ensemble.evaluate import oof_arrays
from utils.ensemble.vote import f1_thresholds
from utils.preprocess.orient import find_turn


def digitise_file(job: tuple[str, float]) -> tuple[np.ndarray, str]:
    """One picture file's leads (NaN where not read) and why it was not read ('' when it was)."""
    path, evidence = job
    try:
        img = read_image(path).image
    except ImageReadError as exc:
        return blank(), str(exc)
    d, _ = digitise_turned(img, find_turn(img, evidence))
    return d.signals, d.problem


def digitise_files(paths: list[str], evidence: float, cache: Path, workers: int = 0) -> tuple[np.ndarray, list[str]]:
    """(n, 12, 1000) leads of the pictures and the problems, kept in `cache` for these paths."""
    cache = Path(cache)
    if cache.is_file():
        kept = np.load(cache, allow_pickle=False)
        if list(kept["paths"]) == list(paths):
            return kept["signals"], list(kept["problems"])
    out = list(pool_map(digitise_file, [(p, evidence) for p in paths], workers, desc="digitise"))
    signals, problems = np.stack([o[0] for o in out]), [o[1] for o in out]
    buf = io.BytesIO()
    np.savez_compressed(buf, signals=signals, problems=np.array(problems), paths=np.array(paths))
    atomic_write_bytes(cache, buf.getvalue())
    return signals, problems


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
    images = manifest.set_index("id").loc[oof["id"], "image"].tolist()
    signals, problems = digitise_files(images, cfg.turn_evidence, Path(step_dir) / "oof_digitised.npz")
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
    print(f"signal reader: {len(images)} out-of-fold pictures digitised, {read} read "
          f"({len(images) - read} not: the image model alone there)")
    return reader_entry(model, weights, thresholds, cfg.signal_records), table
