"""Does step 02's crop keep the traces on real pictures: `python -m utils.bench.crop --model model.pt
--real ../shared/data/real-ecg-images-unlabeled [--boxes tests/data/real_ecg_boxes.csv] [--detector best.pt]`.

Each real picture is read as the package reads it (`Predictor.read`: the page stood upright when its traces are
sure, then the training strategy's crop), and the region it keeps is judged against boxes drawn by hand
once for those pictures (`tests/data/real_ecg_boxes.csv`, in percent of the width and height: the traces, with their
calibration pulses, and where there is one the header block and the footer; drawn by eye on a 5% grid, to about
1-2% of the side). A crop **keeps the traces** when it holds the traces' box to within `--tolerance` (2% of the
side); it **leaves the header out** when it covers at most
a fifth of the header's box (a picture without a header leaves it out). The traces' share of the crop says how much
of the model's input is traces. Prints the table and writes it, with ten crops drawn over their pictures, to
outputs/crop/<date>/ (crop.csv, crop.md, crops.png). `--synthetic N` judges the crop the same way on N of the
synthesizer's report pages, against their own lead, header and footer boxes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text, new_folder
from utils.core.cli import add_debug, run_cli
from utils.core.figures import pyplot
from utils.core.paths import REPO_ROOT
from utils.ensemble.predictor import Predictor
from utils.synth.generate import SynthSettings, make_sample

BOXES = REPO_ROOT / "tests" / "data" / "real_ecg_boxes.csv"
PARTS = ("traces", "header", "footer")


def read_boxes(path: Path) -> pd.DataFrame:
    """The drawn boxes, one row per picture; a row whose traces' box is missing or not x0 < x1, y0 < y1 within
    0-100 is refused naming the file's line."""
    try:
        table = pd.read_csv(path, dtype={"file": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a table of drawn boxes: {exc}") from None
    missing = [c for c in ["file"] + [f"{p}_{c}" for p in PARTS for c in ("x0", "y0", "x1", "y1")]
               if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)}")
    for i, row in table.iterrows():
        for part in PARTS:
            box = [row[f"{part}_{c}"] for c in ("x0", "y0", "x1", "y1")]
            if part != "traces" and all(pd.isna(v) for v in box):
                continue
            if any(pd.isna(v) for v in box) or not (0 <= box[0] < box[2] <= 100 and 0 <= box[1] < box[3] <= 100):
                raise ValueError(f"{path}, line {i + 2} ({row['file']}): the {part} box {box} is not "
                                 f"x0 < x1, y0 < y1 in percent (0-100)")
    return table


def part_box(row, part: str, size: tuple[int, int]) -> list[float] | None:
    """A drawn box in pixels of a picture of this (width, height); None when the row has none."""
    values = [row[f"{part}_{c}"] for c in ("x0", "y0", "x1", "y1")]
    if any(pd.isna(v) for v in values):
        return None
    w, h = size
    return [values[0] * w / 100, values[1] * h / 100, values[2] * w / 100, values[3] * h / 100]


def kept_region(rec: dict, size: tuple[int, int]) -> list[float]:
    """The region of the picture a preparation keeps: its record's window (the crop, the rectified sheet's bounding
    box, or the whole picture)."""
    return [float(v) for v in rec["window"]]


def overlap(a, b) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def judge(region, row, size: tuple[int, int], tolerance: float = 0.02, header_share: float = 0.2) -> dict:
    """Whether a kept region holds the traces' box (to within `tolerance` of the side) and leaves the header and the
    footer out (covering at most `header_share` of each), and the traces' share of the region."""
    w, h = size
    traces, header, footer = (part_box(row, p, size) for p in PARTS)
    tx, ty = tolerance * w, tolerance * h
    keeps = region[0] <= traces[0] + tx and region[1] <= traces[1] + ty and \
        region[2] >= traces[2] - tx and region[3] >= traces[3] - ty
    out = {"keeps_traces": bool(keeps), "traces_share": round(overlap(region, traces) / max(area(region), 1.0), 3)}
    for name, box in (("header", header), ("footer", footer)):
        out[f"{name}_out"] = True if box is None else bool(overlap(region, box) <= header_share * area(box))
    out["kept_and_header_out"] = out["keeps_traces"] and out["header_out"]
    return out


def synthetic_pages(n: int, seed: int = 1, size=(1100, 850)) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """n of the synthesizer's report pages (scans and photos in turn) and their boxes in the drawn boxes' form:
    the traces (every lead box together), the header and the footer, in percent of the picture."""
    pictures, rows = {}, []
    for i in range(n):
        style = ("scan", "photo")[i % 2]
        jpeg, ann, _ = make_sample(SynthSettings(style=style, seed=seed, report_share=1.0, page_width=size[0],
                                                 page_height=size[1]), i)
        name = f"report-{style}-{i:02d}"
        pictures[name] = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        w, h = ann["image_size"]
        leads = np.array([b["box"] for b in ann["lead_boxes"].values()])
        parts = {"traces": [*leads[:, :2].min(0), *leads[:, 2:].max(0)],
                 **{k: v["box"] for k, v in ann["report_boxes"].items()}}
        row = {"file": name}
        for part in PARTS:
            box = parts.get(part)
            for c, v, side in zip(("x0", "y0", "x1", "y1"), box or [np.nan] * 4, (w, h, w, h)):
                row[f"{part}_{c}"] = float(np.clip(100 * v / side, 0, 100))
        rows.append(row)
    return pictures, pd.DataFrame(rows)


def crops_figure(rows: list[dict], pictures: dict[str, np.ndarray], boxes: pd.DataFrame, path: Path,
                 n: int = 10) -> Path:
    """Up to n pictures (those with a header first) with the drawn traces (green), header and footer (orange) and
    the kept region (blue)."""
    plt = pyplot()
    shown = sorted(rows, key=lambda r: (boxes.loc[r["file"]].isna()["header_x0"], r["file"]))[:n]
    fig, axes = plt.subplots((len(shown) + 1) // 2, 2, figsize=(12, 2.6 * ((len(shown) + 1) // 2)))
    for ax, r in zip(np.ravel(axes), shown):
        img = pictures[r["file"]]
        h, w = img.shape[:2]
        ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        for part, colour in (("traces", "#2ca02c"), ("header", "#ff7f0e"), ("footer", "#ff7f0e")):
            box = part_box(boxes.loc[r["file"]], part, (w, h))
            if box is not None:
                ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec=colour, lw=1.5))
        k = r["region"]
        ax.add_patch(plt.Rectangle(k[:2], k[2] - k[0], k[3] - k[1], fill=False, ec="#1f77b4", lw=2.5, ls="--"))
        verdict = ("traces kept" if r["keeps_traces"] else "traces cut") + \
            ("" if r["header_out"] else ", header in")
        ax.set_title(f"{r['file']}: {verdict}", fontsize=9)
        ax.axis("off")
    for ax in np.ravel(axes)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.crop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a package (step 05's model.pt): its preparation")
    ap.add_argument("--real", type=Path, help="the folder of the pictures the boxes were drawn on")
    ap.add_argument("--synthetic", type=int, default=0,
                    help="instead of real pictures: this many of the synthesizer's report pages, judged against "
                         "their own lead, header and footer boxes")
    ap.add_argument("--boxes", type=Path, default=BOXES, help="the drawn boxes (percent of width and height)")
    ap.add_argument("--detector", default="", help="YOLO weights (step 02's best.pt); default: classical finder")
    ap.add_argument("--crop-to", choices=("package", "traces", "sheet"), default="package",
                    help="what roi_clahe keeps: as the package was trained (default), or traces / sheet")
    ap.add_argument("--tolerance", type=float, default=0.02, help="how far inside the traces a crop may stop")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "crop", help="results folder root")
    return run_cli(_run, add_debug(ap).parse_args(argv))


def _run(a) -> int:
    if a.synthetic:
        given, table = synthetic_pages(a.synthetic)
        boxes, source = table.set_index("file"), f"{a.synthetic} synthetic report pages"
    elif a.real is not None:
        boxes, source = read_boxes(a.boxes).set_index("file"), f"{a.real.name}; boxes {a.boxes.name}"
        given = {n: a.real / n for n in boxes.index}
    else:
        raise ValueError("give --real FOLDER (with --boxes) or --synthetic N")
    predictor = Predictor(a.model, detector=a.detector, device="cpu")
    if a.crop_to != "package":
        predictor.prep = replace(predictor.prep, crop_to=a.crop_to)
    rows, pictures, skipped = [], {}, []
    names = list(boxes.index)
    for name, reading in zip(names, predictor.read([given[n] for n in names], keep=True, desc="crops")):
        if reading.error:
            skipped.append(f"{name}: {reading.error}")
            continue
        rec, img = reading.rec, reading.image
        if rec.get("turn"):  # judged on the picture as it came
            skipped.append(f"{name}: turned by {rec['turn']} degrees before the crop; not judged")
            continue
        size = (img.shape[1], img.shape[0])
        region = kept_region(rec, size)
        pictures[name] = img
        rows.append({"file": name, "method": rec["method"], "applied": rec["applied"], "region": region,
                     **judge(region, boxes.loc[name], size, a.tolerance)})
    table = pd.DataFrame(rows)
    with_header = table[~boxes.loc[table["file"], "header_x0"].isna().to_numpy()]
    summary = pd.DataFrame([{
        "pictures": len(table), "keeps_traces": int(table["keeps_traces"].sum()),
        "with_header": len(with_header), "header_left_out": int(with_header["header_out"].sum()),
        "kept_and_header_out": int(table["kept_and_header_out"].sum()),
        "traces_share_median": float(table["traces_share"].median())}])
    out = new_folder(Path(a.out) / dt.date.today().isoformat())
    table.to_csv(out / "crop.csv", index=False)
    crops_figure(rows, pictures, boxes, out / "crops.png")
    text = f"# The crop: {a.model}, crop_to {predictor.prep.crop_to} ({source})\n\n" \
        f"{summary.to_markdown(index=False, floatfmt='.3f')}\n\n" \
        f"{table.drop(columns=['region']).to_markdown(index=False, floatfmt='.3f')}\n" + \
        ("\nskipped:\n" + "\n".join(skipped) + "\n" if skipped else "")
    atomic_write_text(out / "crop.md", text)
    print(summary.to_markdown(index=False, floatfmt=".3f") + f"\nwritten: {out / 'crop.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
