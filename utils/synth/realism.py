"""Sim-to-real on signals: does a network that reads the simulator's waveforms read real ones?

    python -m utils.synth.realism [--real ../shared/data/ptbxl-more,../shared/data/ptbxl-dev,...] [--n-sim 3000]
        [--epochs 10] [--networks 3] [--seed 0] [--out outputs/realism]

Pictures are taken out of the question: small 1D CNNs (three seeds, scores averaged) are trained on N simulated
12-lead records (500 Hz, brought to 100 Hz, 10 s) and scored on real WFDB records with labels (PTB-XL folders; any
WFDB folder with a labels CSV through --labels). Beside each sim -> real figure stand its ceilings: sim -> sim (new
simulated records) and real -> real (five-fold cross-validation on the same real records, grouped by patient). Per label and macro, with
bootstrap 95% intervals. Every record, simulated or real, goes through the same preparation (0.5 Hz high-pass,
clipped to +-5 mV). With no real folder present it says so and measures sim -> sim alone.

With --as-picture LEAD:SAMPLES:PX_PER_MV every record is first reduced to what one printed strip of a picture keeps:
one lead, SAMPLES points across its 10 s, amplitudes in steps of one pixel (II:320:12.6 is the demo's rhythm strip
at 256x352 px), so that what a picture's resolution loses is told apart from what the image model fails to read.

Writes results.csv (and with --features: features.csv, the medians of the measurements the labels depend on, real
against simulated, per group; separability.csv, each measurement's AUROC alone per label, real beside simulated;
overlap.csv, per group and measure (intervals, axis, voltage criteria, per lead ST at J+60 ms, T, R and S) the real and
simulated quartiles and how far apart they lie, with distributions.png, their box plots side by side) in a new folder
under --out each run.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text, new_folder
from utils.core.cli import add_debug, fail, run_cli
from utils.core.labels import LABELS
from utils.core.metrics import auroc_table, bootstrap_table, format_interval
from utils.core.paths import REPO_ROOT, present_folders
from utils.synth.checks import (distribution_figure, feature_medians, measured_with_real, overlap_summary,
                                overlap_table, separability)
from utils.synth.labels import sample_labels
from utils.synth.waveform import LEADS, simulate
from utils.synth.wfdb_source import RecordError, list_records, load_signals

FS = 100  # Hz: PTB-XL's low-rate records; the simulator's 500 Hz is brought down to it
SECONDS = 10.0
DEFAULT_REAL = "../shared/data/ptbxl-more,../shared/data/ptbxl-dev,../shared/data/cinc2021-sample"


@dataclass
class SignalSet:
    name: str
    x: np.ndarray       # (n, 12, FS * SECONDS) float32, prepared
    y: np.ndarray       # (n, 5) float, NaN where a label is unknown
    groups: np.ndarray  # (n,) patient (or record) ids, for grouped folds


def prepare(signals: np.ndarray, fs: int) -> np.ndarray:
    """(12, n) mV at fs -> (12, FS * SECONDS) at FS: resampled, 0.5 Hz high-pass, blanks 0, clipped to +-5 mV."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    x = np.nan_to_num(np.asarray(signals, np.float64))
    if fs != FS:
        x = resample_poly(x, FS, fs, axis=1)
    n = int(FS * SECONDS)
    x = sosfiltfilt(butter(2, 0.5, "highpass", fs=FS, output="sos"), x[:, :n], axis=1)
    return np.clip(np.pad(x, ((0, 0), (0, max(0, n - x.shape[1])))), -5, 5).astype(np.float32)


def simulated_set(n: int, seed: int, name: str = "simulated") -> SignalSet:
    """n records from the simulator (labels from sample_labels), prepared as real ones are."""
    xs, ys = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        labels = sample_labels(rng)
        rec = simulate(labels, rng)
        xs.append(prepare(rec.signals, rec.fs))
        ys.append([labels[k] for k in LABELS])
    return SignalSet(name, np.stack(xs), np.array(ys, float), np.arange(n).astype(str))


def real_set(folder: Path, labels_csv: Path | None = None) -> tuple[SignalSet, list[tuple[str, str]]]:
    """Every readable record of a WFDB folder with its labels; unreadable ones are listed, not raised."""
    refs, problems = list_records(folder, labels_csv)
    xs, ys, groups = [], [], []
    for ref in refs:
        try:
            xs.append(prepare(load_signals(ref, fs=FS, duration=SECONDS), FS))
        except RecordError as err:
            problems.append((ref.id, str(err)))
            continue
        ys.append([np.nan if ref.labels.get(k) is None else ref.labels[k] for k in LABELS])
        groups.append(ref.group or ref.id)
    if not xs:
        raise ValueError(f"{folder}: no readable record ({len(problems)} problems, first: {problems[:1]})")
    return SignalSet(Path(folder).name, np.stack(xs), np.array(ys, float), np.array(groups)), problems


def as_picture(data: SignalSet, lead: str, samples: int, px_per_mv: float) -> SignalSet:
    """One lead as a picture keeps it: `samples` points across the record (held in between), amplitudes rounded to
    whole pixels of 1/px_per_mv mV; repeated on all 12 channels so the same network reads it."""
    from scipy.signal import resample

    if lead not in LEADS:
        raise ValueError(f"unknown lead {lead!r}; leads are {', '.join(LEADS)}")
    if samples < 2 or px_per_mv <= 0:
        raise ValueError(f"a picture keeps at least 2 samples and a positive px per mV, got {samples}, {px_per_mv}")
    n = data.x.shape[2]
    low = resample(data.x[:, LEADS.index(lead)], samples, axis=1)
    held = np.round(low * px_per_mv)[:, np.minimum(np.arange(n) * samples // n, samples - 1)] / px_per_mv
    return SignalSet(data.name, np.repeat(held[:, None, :], len(LEADS), 1).astype(np.float32), data.y, data.groups)


def network(seed: int):
    """Five convolution blocks (12 -> 32 -> ... -> 128 channels, each halving time), mean over time, 5 logits."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, c = [], 12
    for out in (32, 48, 64, 96, 128):
        layers += [nn.Conv1d(c, out, 7, padding=3, bias=False), nn.BatchNorm1d(out), nn.ReLU(), nn.MaxPool1d(2)]
        c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(c, len(LABELS)))


def train(data: SignalSet, epochs: int, seed: int, batch: int = 64, lr: float = 3e-3):
    """The network fitted to data (unknown labels are left out of the loss), AdamW with a cosine schedule."""
    import torch

    model = network(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(np.nan_to_num(data.y)).float()
    known = torch.from_numpy(~np.isnan(data.y)).float()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * int(np.ceil(len(x) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx], reduction="none")
            loss = (loss * known[idx]).sum() / known[idx].sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def predict(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([torch.sigmoid(model(torch.from_numpy(x[i:i + batch]))).numpy()
                               for i in range(0, len(x), batch)])


def cross_validated(data: SignalSet, epochs: int, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold scores of networks trained on the other folds (folds grouped by patient)."""
    from sklearn.model_selection import GroupKFold

    out = np.zeros_like(data.y)
    for k, (tr, te) in enumerate(GroupKFold(folds).split(data.x, groups=data.groups)):
        part = SignalSet(data.name, data.x[tr], data.y[tr], data.groups[tr])
        out[te] = predict(train(part, epochs, seed + k), data.x[te])
    return out


def _rows(train_on: str, test: SignalSet, p: np.ndarray, n_boot: int, seed: int) -> list[dict]:
    table = bootstrap_table(test.y, p, n=n_boot, seed=seed)
    positives = {k: int(np.nansum(test.y[:, j])) for j, k in enumerate(LABELS)}
    return [{"trained_on": train_on, "scored_on": test.name, "records": len(test.y), **r,
             "positives": positives.get(r["label"], "")} for r in table.to_dict("records")]


def benchmark(real: list[SignalSet], n_sim: int = 3000, n_sim_test: int = 600, epochs: int = 10, seed: int = 0,
              n_boot: int = 500, cv: bool = True, networks: int = 3, view=None, log=print) -> pd.DataFrame:
    """sim -> sim, sim -> each real set, and real -> real (cross-validated) on each, one row per label and macro.

    The simulated side is the mean score of `networks` networks (seeds seed, seed+1, ...) trained on the same
    records: one network's figure on real records moves by several hundredths per label with its seed alone.
    `view` (e.g. `as_picture` with its arguments bound) reduces every set, simulated and real, the same way first."""
    t = time.perf_counter()
    sim = simulated_set(n_sim, seed)
    sim_test = simulated_set(n_sim_test, seed + 10_000, "simulated (new)")
    if view is not None:
        sim, sim_test, real = view(sim), view(sim_test), [view(r) for r in real]
    log(f"simulated {n_sim} + {n_sim_test} records in {time.perf_counter() - t:.0f} s")
    models = [train(sim, epochs, seed + k) for k in range(networks)]
    log(f"trained {networks} network(s) on simulated records in {time.perf_counter() - t:.0f} s")

    def scores(data: SignalSet) -> np.ndarray:
        each = [predict(m, data.x) for m in models]
        if len(each) > 1:
            single = [auroc_table(data.y, p, warn=False)[0] for p in each]
            log(f"{data.name}: macro-AUROC of each network alone {', '.join(f'{v:.3f}' for v in single)}")
        return np.mean(each, axis=0)

    rows = _rows("simulated", sim_test, scores(sim_test), n_boot, seed)
    for data in real:
        rows += _rows("simulated", data, scores(data), n_boot, seed)
        if cv:
            rows += _rows(f"{data.name} (5-fold, by patient)", data, cross_validated(data, epochs, seed), n_boot, seed)
            log(f"cross-validated on {data.name} in {time.perf_counter() - t:.0f} s")
    return pd.DataFrame(rows)


def wide(results: pd.DataFrame) -> pd.DataFrame:
    """One line per (trained on, scored on): macro and each label, with intervals."""
    cells = results.assign(value=[format_interval(a, lo, hi) for a, lo, hi in
                                  results[["auroc", "ci_low", "ci_high"]].to_numpy(float)])
    order = ["macro", *LABELS]
    table = cells.pivot_table(index=["trained_on", "scored_on"], columns="label", values="value", aggfunc="first",
                              sort=False)
    return table[[c for c in order if c in table.columns]].reset_index()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.synth.realism", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", default=DEFAULT_REAL, help="WFDB folders with labels, comma-separated (absent: skipped)")
    ap.add_argument("--labels", type=Path, help="labels CSV (id column + the five labels) for non-PTB-XL folders")
    ap.add_argument("--n-sim", type=int, default=3000, help="simulated training records")
    ap.add_argument("--n-sim-test", type=int, default=600, help="new simulated records for sim -> sim")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--networks", type=int, default=3, help="networks (seeds) whose mean scores the simulated side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--no-cv", action="store_true", help="skip the real -> real cross-validation")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--features", action="store_true", help="also write the real against simulated measurements")
    ap.add_argument("--as-picture", metavar="LEAD:SAMPLES:PX_PER_MV",
                    help="reduce every record to one lead at a picture's resolution first (e.g. II:320:12.6)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "realism")
    a = add_debug(ap).parse_args(argv)
    if min(a.n_sim, a.n_sim_test, a.epochs, a.networks) < 1:
        return fail("--n-sim, --n-sim-test, --epochs and --networks must be at least 1")
    view = None
    if a.as_picture:
        from functools import partial

        try:
            lead, samples, px = a.as_picture.split(":")
            view = partial(as_picture, lead=lead, samples=int(samples), px_per_mv=float(px))
            view(SignalSet("check", np.zeros((1, 12, 10), np.float32), np.zeros((1, 5)), np.zeros(1)))
        except ValueError as err:
            return fail(f"--as-picture {a.as_picture!r}: {err} (expected LEAD:SAMPLES:PX_PER_MV, e.g. II:320:12.6)")

    def body(a) -> int:
        import torch

        torch.set_num_threads(a.threads)
        folders, notes = present_folders(a.real)
        for note in notes:
            print(f"note: {note}")
        if not folders:
            print("no real WFDB folder present: only sim -> sim is measured")
        real, problems = [], []
        for folder in folders:
            data, probs = real_set(folder, a.labels)
            real.append(data)
            problems += [(folder.name, rid, why) for rid, why in probs]
            print(f"{folder}: {len(data.y)} records" + (f", {len(probs)} problems listed" if probs else ""))
        results = benchmark(real, a.n_sim, a.n_sim_test, a.epochs, a.seed, a.bootstrap, not a.no_cv, a.networks,
                            view)
        out = new_folder(a.out / "run")
        atomic_write_text(out / "results.csv", results.to_csv(index=False))
        if problems:
            atomic_write_text(out / "problems.csv", pd.DataFrame(problems, columns=["folder", "id", "problem"])
                              .to_csv(index=False))
        if a.features and folders:
            refs = [r for f in folders for r in list_records(f, a.labels)[0]]
            measured = measured_with_real(refs, n_sim=1500)
            atomic_write_text(out / "features.csv", feature_medians(*measured).to_csv(index=False))
            atomic_write_text(out / "separability.csv", separability(*measured).to_csv(index=False))
            table = overlap_table(*measured)
            atomic_write_text(out / "overlap.csv", table.to_csv(index=False))
            distribution_figure(*measured, out / "distributions.png")
            print(overlap_summary(table).to_string(index=False))
        print(wide(results).to_string(index=False))
        print(f"written: {out}")
        return 0

    return run_cli(body, a)


if __name__ == "__main__":
    sys.exit(main())
