"""How stable a decision is under changes that keep a picture's meaning:
`python -m utils.bench.stability --model model.pt --run outputs/demo/latest [--pictures 60]`.

Each test photo is predicted as it is and after each change (albumentations: re-encoded as JPEG at quality 75, 85
and 95; the whole picture resized by 0.9 and 1.1; rotated by -3, -1, +1 and +3 degrees, the border replicated), through
the predict command's own path (utils.ensemble.predict.Predictor). Per change and label: the mean and 95th percentile
of the probability's change, and the share of pictures whose yes/no decision flips. Prints the table and writes it to
outputs/stability/<date>/ (stability.csv, stability.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
from utils.core.progress import tqdm

from utils.core.atomic import atomic_write_text, new_folder
from utils.core.cli import add_debug, run_cli
from utils.core.imageio import IMAGE_EXTS, ImageReadError, read_image
from utils.core.labels import LABELS
from utils.core.paths import REPO_ROOT
from utils.ensemble.predictor import Predictor
from utils.ensemble.submission import select_test_rows


def changes() -> dict[str, A.BasicTransform]:
    """The meaning-keeping changes, each deterministic (p=1, one value)."""
    out: dict[str, A.BasicTransform] = {f"JPEG {q}": A.ImageCompression(quality_range=(q, q), p=1.0)
                                        for q in (75, 85, 95)}
    out |= {f"scale {s:g}": A.RandomScale(scale_limit=(s - 1, s - 1), p=1.0) for s in (0.9, 1.1)}
    out |= {f"rotate {d:+d} deg": A.Rotate(limit=(d, d), border_mode=cv2.BORDER_REPLICATE, p=1.0)
            for d in (-3, -1, 1, 3)}
    return out


def test_pictures(run_dir: Path | None, images: Path | None, n: int) -> list[Path]:
    """The run's test photos (step 01's manifest), or the pictures of a folder; the first n."""
    if images is not None:
        found = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    else:
        manifest = Path(run_dir) / "01_assemble" / "manifest.csv"
        if not manifest.is_file():
            raise FileNotFoundError(f"--run {run_dir}: no 01_assemble/manifest.csv (a run of step 01, or --images)")
        found = [Path(p) for p in select_test_rows(pd.read_csv(manifest, dtype={"id": str}))["image"]]
    if not found:
        raise FileNotFoundError(f"no pictures in {images or run_dir}")
    return found[:n]


def measure(predictor: Predictor, pictures: list[Path], seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """One row per (picture, change, label): the probability before and after, the decisions before and after."""
    rows, skipped = [], []
    for i, path in enumerate(tqdm(pictures, desc="stability", unit="picture")):
        try:
            img = read_image(path).image
        except ImageReadError as exc:  # listed, and the others go on
            skipped.append(f"{path}: {exc}")
            continue
        p0, d0 = predictor.verdict(predictor.read_one(img, keep=False))
        for name, change in changes().items():
            change.set_random_seed(seed + i)
            p1, d1 = predictor.verdict(predictor.read_one(change(image=img)["image"], keep=False))
            rows += [{"picture": path.name, "change": name, "label": k, "p": p0[j], "p_changed": p1[j],
                      "decision": int(d0[j]), "decision_changed": int(d1[j])} for j, k in enumerate(LABELS)]
    return pd.DataFrame(rows), skipped


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per change and label: mean and 95th percentile |change of probability|, flipped decisions (share)."""
    rows = rows.assign(delta=(rows["p_changed"] - rows["p"]).abs(), flip=rows["decision"] != rows["decision_changed"])
    table = rows.groupby(["change", "label"], sort=False).agg(
        mean_abs_change=("delta", "mean"), p95_abs_change=("delta", lambda v: float(np.percentile(v, 95))),
        flipped=("flip", "mean"), pictures=("picture", "nunique")).reset_index()
    overall = rows.groupby("change", sort=False).agg(
        mean_abs_change=("delta", "mean"), p95_abs_change=("delta", lambda v: float(np.percentile(v, 95))),
        flipped=("flip", "mean"), pictures=("picture", "nunique")).reset_index().assign(label="all")
    return pd.concat([table, overall], ignore_index=True).round(4)


def wide(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per change, a column per label (and all)."""
    out = table.pivot(index="change", columns="label", values=value)
    return out.reindex(index=list(dict.fromkeys(table["change"])), columns=[*LABELS, "all"]).reset_index()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.stability", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the package (step 05's model.pt)")
    ap.add_argument("--run", type=Path, help="a run whose test photos are used (step 01's manifest)")
    ap.add_argument("--images", type=Path, help="or a folder of pictures")
    ap.add_argument("--pictures", type=int, default=60, help="how many pictures (the first ones)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "stability", help="results folder root")
    ap.add_argument("--device", default="auto")
    return run_cli(_run, add_debug(ap).parse_args(argv))


def _run(a) -> int:
    if (a.run is None) == (a.images is None):
        raise ValueError("give --run (its test photos) or --images (a folder), one of them")
    pictures = test_pictures(a.run, a.images, a.pictures)
    rows, skipped = measure(Predictor(a.model, device=a.device), pictures)
    if rows.empty:
        raise ValueError("no picture could be read:\n" + "\n".join(skipped))
    table = summary(rows)
    out = new_folder(Path(a.out) / dt.date.today().isoformat())
    table.to_csv(out / "stability.csv", index=False)
    text = "\n\n".join(f"### {title}\n\n{wide(table, col).to_markdown(index=False, floatfmt='.3f')}"
                       for title, col in (("mean |change of probability|", "mean_abs_change"),
                                          ("95th percentile |change of probability|", "p95_abs_change"),
                                          ("share of decisions flipped", "flipped")))
    head = f"# Decision stability: {a.model}, {rows['picture'].nunique()} pictures\n\n"
    atomic_write_text(out / "stability.md", head + text + ("\n\nskipped:\n" + "\n".join(skipped) if skipped else "")
                      + "\n")
    print(head + text)
    print(f"written: {out / 'stability.md'}" + (f"; {len(skipped)} picture(s) skipped" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
