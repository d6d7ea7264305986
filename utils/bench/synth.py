"""Benchmarks and checks that print numbers: `python -m utils.bench.synth [speed|shortcuts|learn|compare|all]`.

speed      images/s per style (one process, then all cores), waveform records/s beside neurokit2, peak memory
shortcuts  AUROC of a classifier on global image statistics per label (should sit in the chance band)
learn      AUROC of a classifier on simple signal measurements per label (labels must be learnable)
compare    simulated measurements beside real PTB-XL records (needs --ptbxl DIR)
code15     pictures/s rendered from CODE-15%-shaped HDF5 parts beside simulated waveforms, same pages, same run
crumple    pictures/s with crumpled paper beside without (same run), the sheet finder on the same pictures per strength
           (sheet found, IoU with the true box), and example pictures (--out FILE.jpg)
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from utils.preprocess.cache import PrepSettings, find_sheet
from utils.preprocess.roi import box_iou
from utils.preprocess.step import truth_box
from utils.synth.checks import compare_with_real, learnability_check, shortcut_check
from utils.synth.code15_source import list_exams
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings, make_sample
from utils.synth.waveform import simulate
from utils.synth.wfdb_source import list_records


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_waveform(n: int = 200) -> None:
    for fs in (500, 100):
        simulate({}, np.random.default_rng(0), fs=fs)
        t = time.perf_counter()
        for i in range(n):
            simulate({"MI": i % 4 == 0, "AF": i % 7 == 0, "CD": i % 5 == 0}, np.random.default_rng(i), fs=fs)
        dt = (time.perf_counter() - t) / n
        print(f"waveform  fs={fs:3d}: {dt * 1000:6.2f} ms/record  {1 / dt:7.1f} records/s")
    try:
        import neurokit2 as nk
    except ImportError:
        print("neurokit2 not installed: no side-by-side reference")
        return
    k = 5
    t = time.perf_counter()
    for i in range(k):
        nk.ecg_simulate(duration=10, sampling_rate=500, method="multileads", random_state=i)
    ref = (time.perf_counter() - t) / k
    t = time.perf_counter()
    for i in range(n):
        simulate({}, np.random.default_rng(i), fs=500)
    ours = (time.perf_counter() - t) / n
    print(f"neurokit2 ecg_simulate(multileads, 10 s, 500 Hz): {ref * 1000:.1f} ms/record; "
          f"ours {ours * 1000:.2f} ms -> {ref / ours:.0f}x faster (same run)")


def bench_images(width: int, height: int, n: int, workers: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    for style in ("photo", "scan"):
        s = SynthSettings(style=style, page_width=width, page_height=height, photo_max_side=max(width, height))
        make_sample(s, 0)
        t = time.perf_counter()
        size = 0
        for i in range(n):
            size += len(make_sample(s, i)[0])
        dt = (time.perf_counter() - t) / n
        print(f"{style:5s} {width}x{height} JPEG, 1 process: {1 / dt:5.1f} images/s per core "
              f"({dt * 1000:.0f} ms/image, {size / n / 1024:.0f} KiB/image), peak RSS {_peak_mb():.0f} MB")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            generate_dataset(Path(tmp), s, n_train=n * workers, workers=workers, progress=False)
            dt = time.perf_counter() - t
        print(f"{style:5s} {width}x{height} JPEG, {workers} processes (start-up included): "
              f"{n * workers / dt:5.1f} images/s")


def write_code15_like(root: Path, n: int, part_size: int = 100) -> Path:
    """A CODE-15%-shaped folder (exams.csv, exams_partK.hdf5 of (rows, 4096, 12) at 400 Hz, zero-padded) from the
    simulator's waveforms: the reader's and renderer's speed can be measured without the real data."""
    import h5py
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for k, start in enumerate(range(0, n, part_size)):
        ids = np.arange(start, min(n, start + part_size)) + 1
        tracings = np.zeros((len(ids), 4096, 12), np.float32)
        for i in range(len(ids)):
            sig = simulate({}, rng, fs=400).signals[:, :4000].T
            pad = int(rng.integers(0, 96))
            tracings[i, pad:pad + len(sig)] = sig
        with h5py.File(root / f"exams_part{k}.hdf5", "w") as f:
            f.create_dataset("exam_id", data=ids)
            f.create_dataset("tracings", data=tracings, chunks=(1, 4096, 12))
        rows += [{"exam_id": int(e), "patient_id": int(e), "1dAVb": False, "RBBB": False, "LBBB": False,
                  "SB": False, "ST": False, "AF": bool(e % 10 == 0), "normal_ecg": bool(e % 3 == 0),
                  "trace_file": f"exams_part{k}.hdf5"} for e in ids]
    pd.DataFrame(rows).to_csv(root / "exams.csv", index=False)
    return root


def bench_code15(width: int, height: int, n: int, workers: int) -> None:
    s = SynthSettings(style="scan", page_width=width, page_height=height)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "code15").mkdir()
        t = time.perf_counter()
        refs, _ = list_exams(write_code15_like(root / "code15", n))
        listed = time.perf_counter() - t
        rates = {}
        for name, kw in (("CODE-15% exams", {"refs": refs}), ("simulated", {})):
            t = time.perf_counter()
            generate_dataset(root / name.split()[0], s, n_train=n, workers=workers, progress=False, **kw)
            rates[name] = n / (time.perf_counter() - t)
        print(f"scan {width}x{height}, {workers} processes, {n} pictures each (writing and indexing the parts: "
              f"{listed:.1f} s): " + ", ".join(f"{k} {v:.1f} pictures/s" for k, v in rates.items())
              + f"; CODE-15% / simulated = {rates['CODE-15% exams'] / rates['simulated']:.2f}")


def bench_crumple(width: int, height: int, n: int, workers: int, out: Path | None) -> None:
    """The synthesizer's rate with crumpled paper (strength 1.5) beside a flat sheet, in one run; example pictures."""
    for style in ("scan", "photo"):
        rates = {}
        for name, crumple in (("flat", 0.0), ("crumpled", 1.5), ("flat again", 0.0)):
            s = SynthSettings(style=style, page_width=width, page_height=height, photo_max_side=max(width, height),
                              crumple=crumple)
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                generate_dataset(Path(tmp), s, n_train=n, workers=workers, progress=False)
                rates[name] = n / (time.perf_counter() - t)
        flat = (rates["flat"] + rates["flat again"]) / 2
        print(f"{style} {width}x{height}, {workers} processes, {n} pictures each: flat {flat:.1f} pictures/s, "
              f"crumpled {rates['crumpled']:.1f}; crumpled / flat = {rates['crumpled'] / flat:.2f}")
    print(sheet_finder_on_crumpled(width, height, n).to_string(index=False))
    if out is not None:
        print(f"examples: {crumple_examples(out, width, height)}")


def sheet_finder_on_crumpled(width: int, height: int, n: int, strengths=(0.0, 1.0, 2.0, 3.0)):
    """Step 02's sheet finder without a detector (the classical one, as the demo runs it) on the same n pictures per
    style at each strength: how often it falls back to the whole picture, and the IoU of the box it keeps with the
    synthesizer's true sheet box."""
    import cv2
    import pandas as pd

    rows = []
    for style in ("scan", "photo"):
        for strength in strengths:
            s = SynthSettings(style=style, page_width=width, page_height=height, photo_max_side=max(width, height),
                              crumple=strength, seed=23)
            ious, fallbacks = [], 0
            for i in range(n):
                data, ann, _ = make_sample(s, i)
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                found = find_sheet(img, PrepSettings())
                fallbacks += found["box"] is None
                ious.append(box_iou(found["box"] or [0, 0, img.shape[1], img.shape[0]], truth_box(ann)))
            rows.append({"style": style, "crumple": strength, "pictures": n, "fallback_rate": fallbacks / n,
                         "iou_median": round(float(np.median(ious)), 3),
                         "iou_p5": round(float(np.quantile(ious, 0.05)), 3)})
    return pd.DataFrame(rows)


def crumple_examples(path: Path, width: int = 1100, height: int = 850, index: int = 3) -> Path:
    """One ECG as a scan and as a photo, on a flat, a medium (1.5) and a heavily (3) crumpled sheet."""
    import cv2

    rows = []
    for style in ("scan", "photo"):
        tiles = []
        for crumple in (0.0, 1.5, 3.0):
            s = SynthSettings(style=style, page_width=width, page_height=height, photo_max_side=max(width, height),
                              crumple=crumple, seed=11)
            img = cv2.imdecode(np.frombuffer(make_sample(s, index)[0], np.uint8), cv2.IMREAD_COLOR)
            img = cv2.resize(img, (520, int(img.shape[0] * 520 / img.shape[1])), interpolation=cv2.INTER_AREA)
            img = cv2.copyMakeBorder(img, 0, 400 - img.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255)) \
                if img.shape[0] < 400 else img[:400]
            cv2.putText(img, f"{style}, crumple {crumple:g}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2)
            tiles.append(img)
        rows.append(np.hstack(tiles))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.synth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["speed", "shortcuts", "learn", "compare", "code15", "crumple", "all"])
    ap.add_argument("--width", type=int, default=2200)
    ap.add_argument("--height", type=int, default=1700)
    ap.add_argument("--n", type=int, default=40, help="images per style for speed; x10 for the checks")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--ptbxl", type=Path, help="PTB-XL-layout folder for 'compare'")
    ap.add_argument("--out", type=Path, help="crumple: where to write the example pictures (JPEG or PNG)")
    args = ap.parse_args(argv)
    import os

    import pandas as pd

    pd.set_option("display.width", 200)
    workers = args.workers or os.cpu_count() or 1
    if args.what in ("speed", "all"):
        bench_waveform()
        bench_images(args.width, args.height, args.n, workers)
    if args.what in ("crumple", "all"):
        bench_crumple(args.width, args.height, args.n, workers, args.out)
    if args.what in ("code15", "all"):
        bench_code15(args.width, args.height, args.n * 2, workers)
    if args.what in ("shortcuts", "all"):
        n = args.n * 10
        for style in ("photo", "scan"):
            s = SynthSettings(style=style, page_width=660, page_height=510, photo_max_side=800)
            print(f"\nshortcut check, {style}, {n} images (AUROC should be within 0.5 +- chance_band):")
            print(shortcut_check(s, n=n).to_string(index=False))
            print("same, traces drawn flat (style and artefacts alone):")
            print(shortcut_check(s, n=n, flat=True).to_string(index=False))
    if args.what in ("learn", "all"):
        print(f"\nlearnability from simple signal measurements, {args.n * 15} simulated records:")
        print(learnability_check(n=args.n * 15).to_string(index=False))
    if args.what in ("compare", "all") and args.ptbxl:
        refs, _ = list_records(args.ptbxl)
        print(f"\nmedians, real PTB-XL ({len(refs)} records) beside simulated:")
        print(compare_with_real(refs).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
