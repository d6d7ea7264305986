"""Write a competition-shaped dataset in parallel, resumably, shard by shard.

    <out>/train/<id>.jpg  train.csv (id, MI, AF, HYP, CD, STTC)
    <out>/test/<id>.jpg   sample_submission.csv, test_labels.csv (held-out truth, for evaluation only)
    <out>/annotations/<id>.json   boxes, corners, lead boxes, style and artefact parameters, findings
    <out>/waveforms/<id>.npy      the plotted signals (optional)
    <out>/traces/<id>.npz         where each lead's trace lies in the picture (optional; utils/synth/traces.py)
    <out>/synth.json              the settings; <out>/failures.csv  records that could not be rendered
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from utils.core.labels import LABELS
from utils.core.pool import pool_map
from utils.synth.code15_source import SOURCE as CODE15, load_code15
from utils.synth.generate import SynthSettings, make_picture
from utils.synth.traces import TraceError, save as save_traces_file
from utils.synth.wfdb_source import RecordError, RecordRef, load_signals


class DatasetError(RuntimeError):
    """The output folder holds a dataset made with other settings, or the request is inconsistent."""


@dataclass(frozen=True)
class Job:
    index: int
    id: str
    split: str
    ref: RecordRef | None = None


def _ann_path(out: Path, sample_id: str) -> Path:
    return out / "annotations" / f"{sample_id}.json"


def _work(args: tuple[Path, SynthSettings, Job, bool, bool]) -> tuple[str, str | None]:
    """Make and write one sample; the annotation is written last, so it marks the sample complete."""
    out, settings, job, save_waveform, save_traces = args
    try:
        signals = labels = None
        if job.ref is not None:
            load = load_code15 if job.ref.source == CODE15 else load_signals
            signals = load(job.ref, fs=settings.fs)
            labels = job.ref.labels
        sample = make_picture(settings, job.index, signals=signals, labels=labels)
    except RecordError as exc:
        return job.id, str(exc)
    data, ann, signals = sample.jpeg, sample.ann, sample.signals
    atomic_write_bytes(out / job.split / f"{job.id}.jpg", data)
    if save_traces:
        try:
            save_traces_file(sample.traces, out / "traces" / f"{job.id}.npz")
        except TraceError as exc:  # listed in failures.csv; the picture has no annotation, so it is made again
            return job.id, str(exc)
    if save_waveform:
        buf = io.BytesIO()
        np.save(buf, signals.astype(np.float32))
        atomic_write_bytes(out / "waveforms" / f"{job.id}.npy", buf.getvalue())
    ann.update(id=job.id, split=job.split, index=job.index, image=f"{job.split}/{job.id}.jpg")
    if job.ref is not None:
        ann.update(source=job.ref.source, record=str(job.ref.path), group=job.ref.group)
    else:
        ann.update(source="simulated", group=job.id)
    atomic_write_json(_ann_path(out, job.id), ann)
    return job.id, None


def _check_settings(out: Path, record: dict, force: bool) -> None:
    path = out / "synth.json"
    if path.is_file() and not force:
        old = read_json(path)
        if old != record:
            changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise DatasetError(f"{out} holds a dataset made with other settings ({', '.join(changed)}); "
                               f"choose another folder (nothing was overwritten)")
    atomic_write_json(path, record)


def plan_jobs(n_train: int, n_test: int, refs: list[RecordRef] | None = None) -> list[Job]:
    if refs is not None:
        return [Job(i, ref.id, "train", ref) for i, ref in enumerate(refs)]
    jobs = [Job(i, f"{i:06d}", "train") for i in range(n_train)]
    return jobs + [Job(n_train + i, f"{n_train + i:06d}", "test") for i in range(n_test)]


def generate_dataset(out: Path, settings: SynthSettings, n_train: int = 0, n_test: int = 0,
                     refs: list[RecordRef] | None = None, workers: int = 0, shard: tuple[int, int] = (0, 1),
                     save_waveform: bool = False, force: bool = False, progress: bool = True,
                     save_traces: bool = False) -> dict:
    """Make every missing sample of this shard, then (for a whole set) write the CSVs. Returns a summary."""
    out = Path(out)
    i, n = shard
    if not 0 <= i < n:
        raise DatasetError(f"shard {i}/{n}: need 0 <= i < n")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, {"settings": settings.to_dict(), "n_train": n_train, "n_test": n_test,
                          "records": None if refs is None else [r.id for r in refs]}, force)
    jobs = [j for j in plan_jobs(n_train, n_test, refs) if j.index % n == i]
    todo = [j for j in jobs if not _ann_path(out, j.id).is_file()]
    failures = []
    args = [(out, settings, j, save_waveform, save_traces) for j in todo]
    for sample_id, err in pool_map(_work, args, workers, f"synth {settings.style} {out.name}", progress=progress):
        failures += [(sample_id, err)] if err else []
    _write_failures(out, failures)
    summary = {"folder": str(out), "style": settings.style, "made": len(todo) - len(failures),
               "skipped_existing": len(jobs) - len(todo), "failed": len(failures), "shard": f"{i}/{n}"}
    if n == 1:
        summary.update(write_tables(out, plan_jobs(n_train, n_test, refs)))
    return summary


def _write_failures(out: Path, failures: list[tuple[str, str]]) -> None:
    path = out / "failures.csv"
    old = list(csv.reader(io.StringIO(path.read_text())))[1:] if path.is_file() else []
    rows = {r[0]: r[1] for r in old} | dict(failures)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "reason"])
    w.writerows(sorted(rows.items()))
    atomic_write_text(path, buf.getvalue())


def _label_cell(value) -> str:
    return "" if value is None else str(int(value))


def write_tables(out: Path, jobs: list[Job]) -> dict:
    """train.csv, test_labels.csv and sample_submission.csv from the annotations of complete samples."""
    tables = {"train": [], "test": []}
    for job in jobs:
        path = _ann_path(out, job.id)
        if path.is_file():
            ann = read_json(path)
            tables[job.split].append([job.id] + [_label_cell(ann["labels"].get(k)) for k in LABELS])
    header = ["id", *LABELS]
    for name, rows in (("train.csv", tables["train"]), ("test_labels.csv", tables["test"])):
        if rows or name == "train.csv":
            atomic_write_text(out / name, "\n".join(",".join(r) for r in [header, *rows]) + "\n")
    if tables["test"]:
        sub = [header] + [[r[0]] + ["0.5"] * len(LABELS) for r in tables["test"]]
        atomic_write_text(out / "sample_submission.csv", "\n".join(",".join(r) for r in sub) + "\n")
    return {"train_rows": len(tables["train"]), "test_rows": len(tables["test"])}
