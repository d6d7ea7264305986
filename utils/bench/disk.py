"""The disk budget against the disk: `python -m utils.bench.disk [--scans 2000] [--photos 400] [--yolo-images 300]`.

Runs steps 00-02 of the kaggle profile at a tenth of its Stage I (the profile's page size, detector, strategies, cache
size and JPEG settings; the target is synthetic photos, as no competition is attached here) in Kaggle's layout
(data_root outside the working folder, as /kaggle/temp is), then holds what each artefact really takes on disk against
what the budget estimated before the work, and the saved output's files against Kaggle's. Prints the table, writes it
under outputs/bench/disk/.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from utils.core.config import resolve_config
from utils.core.paths import REPO_ROOT, resolve_paths
from utils.pipeline.budget import drawn_bytes, estimate_disk, peak_bytes
from utils.pipeline.runner import run_pipeline

# where each artefact of steps 00-02 lies: (root, glob) with root "data" (data_root) or "run" (the run's folder)
WHERE = {"synthetic scans": ("data", "synth-scan-*"), "synthetic photos": ("data", "synth-photo-*"),
         "detector pictures": ("data", "detector-*"), "YOLO dataset": ("data", "yolo-*"),
         "YOLO training run": ("run", "02_preprocess/yolo")}


def _size(paths) -> tuple[int, int]:
    """Bytes and files under these folders (links not followed)."""
    total = files = 0
    for folder in paths:
        for root, _, names in os.walk(folder):
            for name in names:
                p = os.path.join(root, name)
                if not os.path.islink(p):
                    total, files = total + os.path.getsize(p), files + 1
    return total, files


def measure(estimate: pd.DataFrame, data_root: Path, run_dir: Path) -> pd.DataFrame:
    """The estimate's rows of steps 00-02 beside the bytes found where each lies."""
    rows = []
    for r in estimate[estimate["step"].isin(["00", "02"])].itertuples():
        if r.what.startswith("cache "):
            root, pattern = "run", f"02_preprocess/cache/{r.what.split(' ', 1)[1]}"
        else:
            root, pattern = WHERE[r.what]
        found, files = _size(sorted((data_root if root == "data" else run_dir).glob(pattern)))
        rows.append({"what": r.what, "saved": r.saved, "count": r.count, "estimated_mb": round(r.bytes / 1e6, 1),
                     "measured_mb": round(found / 1e6, 1), "files": files,
                     "error": f"{r.bytes / found - 1:+.1%}" if found else "nothing written"})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.disk", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scans", type=int, default=2000, help="Stage I scans (the kaggle profile draws 20,000)")
    ap.add_argument("--photos", type=int, default=400, help="synthetic target photos, a quarter of them test")
    ap.add_argument("--yolo-images", type=int, default=300, help="detector pictures (the profile: 3,000)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "bench" / "disk")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        overrides = {"working_root": str(tmp / "working"), "data_root": str(tmp / "temp" / "data"),
                     "input_root": str(tmp / "input"), "target": "synth", "synth_scan_train": a.scans,
                     "synth_photo_train": a.photos * 3 // 4, "synth_photo_test": a.photos // 4,
                     "yolo_train_images": a.yolo_images, "yolo_epochs": 1, "page_reader": False,
                     "signal_reader": False, "real_check_dirs": ""}
        (tmp / "input").mkdir()
        cfg = resolve_config("kaggle", overrides)
        paths = resolve_paths(cfg)
        started = time.perf_counter()
        estimate = estimate_disk(cfg, paths)
        said = time.perf_counter() - started
        started = time.perf_counter()
        run_dir = run_pipeline("kaggle", "00-02", overrides, set_latest=False)
        ran = time.perf_counter() - started
        table = measure(estimate, paths.data_root, run_dir)
        saved, saved_files = _size([paths.output_root])
        drawn, drawn_files = _size([paths.data_root])
    upto02 = estimate[estimate["step"].isin(["00", "02"])]
    lines = [f"kaggle profile, steps 00-02 at {a.scans} scans, {a.photos} photos, {a.yolo_images} detector pictures "
             f"(estimate {said:.0f} s, run {ran:.0f} s, {os.cpu_count()} CPUs)", table.to_string(index=False),
             f"saved output: {saved / 1e6:.1f} MB in {saved_files} files (estimated "
             f"{upto02.loc[upto02['saved'], 'bytes'].sum() / 1e6:.1f} MB for these steps); drawn under data_root: "
             f"{drawn / 1e6:.1f} MB in {drawn_files} files (estimated {drawn_bytes(upto02) / 1e6:.1f} MB)",
             f"whole run's estimate at these counts: {peak_bytes(estimate) / 1e9:.2f} GB at the output's peak, "
             f"{drawn_bytes(estimate) / 1e9:.2f} GB drawn"]
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    table.to_csv(a.out / f"{stamp}.csv", index=False)
    (a.out / f"{stamp}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
