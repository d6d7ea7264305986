"""Seconds per picture for each stage of predict's pass: `python -m utils.bench.stages [--profile demo] [--n 20]
[--images FOLDER]`.

Each picture goes through the stages a prediction runs, one after the other and each timed on its own: decode
(utils.core.imageio), the page reader's gate (a network on a letterboxed square), the traces' turn
(utils.preprocess.orient), the crop (step 02's preparation at the profile's settings), the digitiser
(utils.digitise.trace) and the image model (every fold's forward pass at the profile's input size); beside them the
trace segmenter's mask (utils/digitise/segment.py), which digitising through a package's segmenter adds. The page
reader, the fold models and the segmenter are the profile's architectures with untrained weights: their time does not
depend on the weights; nothing here is a prediction. The stages share what predict shares (utils/preprocess/seen.py): the turn
finds the traces' ink and the crop reads it; the crop finds the sheet and the digitiser reads it (the digitiser still
finds its own ink on the flattened sheet). Torch uses as many threads as there are usable
cores. Pictures: synthetic photos at the profile's size, or a folder's (real ECG photos).

Then the whole pass as step 05 and predict run it (`Predictor.read` on a package of the same untrained models, with
a page reader and a signal reader), on the same pictures, one after the other: prepared here with glibc's default
allocator (a child process where utils.core.pool.keep_freed_memory is off), prepared here, and prepared in a worker
per core. Prints the tables and writes them under outputs/bench/stages/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.core.config import resolve_config
from utils.core.imageio import read_image, walk_pictures
from utils.core.paths import REPO_ROOT
from utils.core.pool import DEFAULT_ALLOCATOR, usable_cores
from utils.digitise.reader import reader_entry
from utils.digitise.segment import mask_of, trace_net
from utils.digitise.trace import digitise_turned
from utils.ensemble.page import HEADS, PageSettings, page_square, to_input
from utils.ensemble.predictor import POOL_FROM, Predictor, package_model
from utils.ensemble.vote import Calibration
from utils.preprocess.cache import prepare
from utils.preprocess.orient import find_turn, upright
from utils.preprocess.seen import Seen
from utils.preprocess.step import parse_strategies, prep_settings
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings
from utils.synth.realism import network
from utils.train.dataset import ModelInput
from utils.train.models import build_untrained


def pictures(cfg, n: int, folder: Path | None, tmp: Path) -> list[Path]:
    if folder is not None:
        return walk_pictures(folder)[0][:n]
    out = tmp / "photos"
    generate_dataset(out, SynthSettings.from_config(cfg, "photo"), n_train=n, workers=usable_cores(), progress=False)
    return sorted((out / "train").glob("*.jpg"))[:n] or sorted(out.rglob("*.jpg"))[:n]


@torch.no_grad()
def time_stages(cfg, paths: list[Path]) -> pd.DataFrame:
    page = PageSettings.from_config(cfg)
    reader = build_untrained(page.backbone, HEADS).eval()
    size = (cfg["image_height"], cfg["image_width"])
    folds = [build_untrained(cfg["backbone"], 5, size).eval() for _ in range(cfg["n_folds"])]
    model_input = ModelInput(size, [0.5] * 3, [0.5] * 3, cfg["input_channels"])
    tracer = trace_net().eval()
    prep = prep_settings(cfg, parse_strategies(cfg["strategies"])[0], "", Path("."))
    rows = []
    for path in paths:
        t = {}

        def timed(stage, fn, *args):
            started = time.perf_counter()
            out = fn(*args)
            t[stage] = time.perf_counter() - started
            return out

        img = timed("decode", lambda p: read_image(p).image, path)
        timed("gate (page reader)", lambda im: reader(to_input(page_square(im, page.size)[None])), img)
        seen = Seen(img)  # as predict: the turn finds the ink, the crop reads it; the crop finds the sheet, the
        orient = timed("turn (traces)", lambda: find_turn(img, cfg["turn_evidence"], ink=seen.ink))  # digitiser too
        turn = orient["turn_found"] if orient["sure"] and cfg["turn_pages"] else 0
        prepared, _ = timed("crop (step 02's preparation)", prepare, upright(img, turn) if turn else img, prep,
                            None, None, seen)
        timed("digitise", digitise_turned, img, orient, None, seen)
        timed("trace segmenter's mask", mask_of, tracer, img)  # what digitising through it adds (segmenter: train)
        x = model_input(prepared)[None]
        timed(f"image model ({len(folds)} folds)", lambda: [m(x) for m in folds])
        rows.append({"picture": path.name, "pixels": img.shape[0] * img.shape[1], **t})
    return pd.DataFrame(rows)


def untrained_package(cfg, tmp: Path) -> Path:
    """A package of the profile's architectures with untrained weights, a page reader and a signal reader: what step
    05 ships, for timing only."""
    size = (cfg["image_height"], cfg["image_width"])
    checkpoints = []
    for k in range(cfg["n_folds"]):
        checkpoints.append(tmp / f"fold{k}.pt")
        torch.save({"model": build_untrained(cfg["backbone"], 5, size).state_dict(),
                    "settings": {"backbone": cfg["backbone"], "image_height": size[0], "image_width": size[1],
                                 "input_channels": cfg["input_channels"]},
                    "data_config": {"mean": (0.5,) * 3, "std": (0.5,) * 3}}, checkpoints[-1])
    page = PageSettings.from_config(cfg)
    prep = prep_settings(cfg, parse_strategies(cfg["strategies"])[0], "", Path("."))
    return package_model(tmp / "model.pt", checkpoints, prep, "soft", Calibration((1.0,) * 5, (0.5,) * 5),
                         page={**asdict(page), "state_dict": build_untrained(page.backbone, HEADS).state_dict()},
                         orient=dict(turn_pages=cfg["turn_pages"], turn_evidence=cfg["turn_evidence"]),
                         signal=reader_entry(network(0), [0.5] * 5, [0.5] * 5, 0))


def pass_row(package: Path, paths: list[Path], label: str, workers: int) -> dict:
    """One whole pass: Predictor.read over the pictures as step 05 reads them."""
    pred = Predictor(package, device="cpu")
    list(pred.read(paths[:1], workers=1))  # warm-up: first calls allocate and load
    started = time.perf_counter()
    readings = list(pred.read(paths, workers=workers))
    wall = time.perf_counter() - started
    errors = [r.error for r in readings if r.error]
    if errors:
        raise SystemExit(f"{len(errors)} picture(s) failed in the whole pass ({label}): {errors[0]}")
    return {"whole pass": label, "s_per_picture": round(wall / len(paths), 3), "wall_s": round(wall, 1),
            "own_s_median": round(float(np.median([r.seconds for r in readings])), 3)}


def time_pass(package: Path, paths: list[Path]) -> pd.DataFrame:
    """The whole pass three ways (see the module): glibc's default allocator in a child process, then here, then in a
    worker per core."""
    listed = package.parent / "pictures.txt"
    listed.write_text("\n".join(map(str, paths)))
    child = subprocess.run([sys.executable, "-m", "utils.bench.stages", "--pass-of", str(package), str(listed)],
                           env={**os.environ, DEFAULT_ALLOCATOR: "1"}, capture_output=True, text=True, cwd=REPO_ROOT)
    if child.returncode:
        raise SystemExit(f"the pass with the default allocator failed:\n{child.stderr[-2000:]}")
    rows = [json.loads(child.stdout.strip().splitlines()[-1]),
            pass_row(package, paths, "prepared here", 1)]
    if len(paths) >= POOL_FROM and usable_cores() > 1:  # fewer are prepared here whatever is asked
        rows.append(pass_row(package, paths, f"a worker per core ({usable_cores()})", 0))
    out = pd.DataFrame(rows)
    out["speed-up"] = (out["s_per_picture"].iloc[0] / out["s_per_picture"]).round(2)
    return out


def summary(table: pd.DataFrame) -> pd.DataFrame:
    stages = [c for c in table.columns if c not in ("picture", "pixels")]
    total = table[stages].sum(axis=1)
    rows = [{"stage": s, "median_s": table[s].median(), "mean_s": table[s].mean(),
             "share": table[s].sum() / total.sum()} for s in stages]
    rows.append({"stage": "all stages", "median_s": total.median(), "mean_s": total.mean(), "share": 1.0})
    out = pd.DataFrame(rows)
    out[["median_s", "mean_s"]] = out[["median_s", "mean_s"]].round(3)
    out["share"] = out["share"].map(lambda v: f"{v:.0%}")
    return out


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--pass-of"]:  # time_pass's child: one pass, its row as JSON
        package, listed = Path(sys.argv[2]), Path(sys.argv[3])
        torch.set_num_threads(usable_cores())
        print(json.dumps(pass_row(package, [Path(p) for p in listed.read_text().splitlines()],
                                  "prepared here, glibc's default allocator", 1)))
        return 0
    ap = argparse.ArgumentParser(prog="python -m utils.bench.stages", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--n", type=int, default=20, help="pictures timed")
    ap.add_argument("--images", type=Path, help="a folder of pictures instead of synthetic photos")
    ap.add_argument("--no-whole-pass", dest="whole_pass", action="store_false",
                    help="time the stages only, not Predictor.read here against a worker per core")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "bench" / "stages")
    a = ap.parse_args(argv)
    cfg = resolve_config(a.profile)
    torch.set_num_threads(usable_cores())
    with tempfile.TemporaryDirectory() as tmp:
        paths = pictures(cfg, a.n, a.images, Path(tmp))
        if not paths:
            raise SystemExit(f"no pictures to time (--images {a.images})")
        time_stages(cfg, paths[:1])  # warm-up: first calls allocate and load
        table = time_stages(cfg, paths)
        whole = time_pass(untrained_package(cfg, Path(tmp)), paths) if a.whole_pass else pd.DataFrame()
    said = summary(table)
    head = (f"profile {a.profile}, {len(table)} pictures ({'synthetic photos' if a.images is None else a.images}, "
            f"median {np.median(table['pixels']) / 1e6:.1f} Mpx), {usable_cores()} cores, torch "
            f"{torch.get_num_threads()} threads, untrained weights (speed only)")
    text = head + "\n" + said.to_string(index=False)
    if len(whole):
        text += (f"\n\nthe whole pass (Predictor.read, {len(paths)} pictures; s_per_picture: wall time over the "
                 f"pictures, a pool's start included; own_s: one picture's own time)\n" + whole.to_string(index=False))
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    table.to_csv(a.out / f"{stamp}-pictures.csv", index=False)
    (a.out / f"{stamp}.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
