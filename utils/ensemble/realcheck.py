"""The real-ECG check: real PTB-XL records rendered as photos by the project's renderer, scored by a packaged model.

    python -m utils.ensemble.realcheck --model outputs/demo/latest/05_ensemble/model.pt \
        [--data ../shared/data/ptbxl-dev,../shared/data/ptbxl-more] [--out outputs/realcheck] [--limit N]

The waveforms and labels are real (cardiologists' PTB-XL statements: MI, HYP, CD, STTC superclasses, AF = AFIB);
only the paper and the photo are ours. Prints per-label and macro AUROC with bootstrap 95% intervals. Folders that
are absent are skipped with a note; with none present the check says so and exits 0 (nothing to measure).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text
from utils.core.cli import add_debug, fail, run_cli
from utils.core.keys import settings_key
from utils.core.labels import LABELS
from utils.core.metrics import bootstrap_table, format_interval
from utils.core.paths import REPO_ROOT, present_folders
from utils.ensemble.evaluate import read_rows
from utils.ensemble.predictor import Predictor, load_package
from utils.ensemble.vote import vote_scores
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings
from utils.synth.wfdb_source import list_records

DEFAULT_DATA = "../shared/data/ptbxl-dev,../shared/data/ptbxl-more"


def render_real(folders: list[Path], out: Path, page: tuple[int, int], photo_max_side: int, seed: int,
                limit: int = 0, workers: int = 0) -> pd.DataFrame:
    """Render every record of the folders in photo style (cached by settings); rows: id, image, source, labels."""
    settings = SynthSettings(style="photo", seed=seed, page_width=page[0], page_height=page[1],
                             photo_max_side=photo_max_side)
    rows = []
    for folder in folders:
        refs, _ = list_records(folder)
        refs = refs[:limit] if limit else refs
        key = settings_key([str(folder), settings.to_dict(), limit])
        dest = out / f"render-{folder.name}-{key}"
        summary = generate_dataset(dest, settings, n_train=len(refs), refs=refs, workers=workers)
        table = pd.read_csv(dest / "train.csv", dtype={"id": str})
        table["image"] = [str(dest / "train" / f"{i}.jpg") for i in table["id"]]
        failed = summary.get("failed", 0)
        print(f"{folder}: {len(table)} records rendered" + (f", {failed} failed (see {dest / 'failures.csv'})"
                                                            if failed else ""))
        rows.append(table.assign(source=folder.name))
    return pd.concat(rows, ignore_index=True)


READERS = {"image model": "image_p_", "signal reader": "signal_p_", "ensemble": "p_"}


def score(model: Path, rows: pd.DataFrame, detector: str = "", sam_checkpoint: str = "",
          device: str = "auto") -> pd.DataFrame:
    """The package's scores for each rendered photo (step 05's loop): p_* the ensemble's; with a signal reader also
    image_p_* (the image model alone, under its vote), signal_p_* (the signal reader alone; NaN where a picture was
    not digitised) and the digitiser's note. Unreadable pictures get an error."""
    pred = Predictor(model, detector, device, sam_checkpoint)
    fold_probs, signal, notes, problems = read_rows(pred, rows)
    errors = {p["id"]: p["error"] for p in problems}
    out = pd.DataFrame(pred.ensemble(fold_probs, signal)[0], columns=[f"p_{k}" for k in LABELS]).assign(
        id=rows["id"].to_numpy(), error=[errors.get(i, "") for i in rows["id"]])
    if signal is not None:
        image = vote_scores(fold_probs, pred.pkg["vote"], pred.calibration)
        out = out.assign(**{f"image_p_{k}": image[:, j] for j, k in enumerate(LABELS)},
                         **{f"signal_p_{k}": signal[:, j] for j, k in enumerate(LABELS)}, digitised=notes)
    return rows.merge(out, on="id")


def readers_table(scored: pd.DataFrame, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """The image model, the signal reader (a picture not digitised scores 0.5: it says nothing) and the ensemble side
    by side on the same pictures: macro and per-label AUROC with intervals, one row per reader."""
    rows = []
    if "signal_p_" + LABELS[0] not in scored.columns:  # the image model alone: nothing to set side by side
        return pd.DataFrame()
    for reader, prefix in READERS.items():
        if f"{prefix}{LABELS[0]}" not in scored.columns:
            continue
        table = auroc_with_ci(scored.assign(**{f"p_{k}": scored[f"{prefix}{k}"].fillna(0.5) for k in LABELS}),
                              n_boot, seed)
        rows.append({"reader": reader, **{r["label"]: format_interval(r["auroc"], r["ci_low"], r["ci_high"])
                                          for r in table.to_dict("records")}})
    return pd.DataFrame(rows)[["reader", "macro", *LABELS]] if rows else pd.DataFrame()


def auroc_with_ci(scored: pd.DataFrame, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Per-label and macro AUROC with bootstrap intervals, positives per label beside them."""
    ok = scored[scored["error"] == ""]
    y = ok[list(LABELS)].to_numpy(float)
    p = ok[[f"p_{k}" for k in LABELS]].to_numpy(float)
    table = bootstrap_table(y, p, n=n_boot, seed=seed)
    table["positives"] = [int(np.nansum(y[:, LABELS.index(k)])) if k in LABELS else int(len(ok))
                          for k in table["label"]]
    return table


def real_check(model: Path, data: str, out: Path, page=(1100, 850), photo_max_side: int = 1400, seed: int = 2024,
               limit: int = 0, n_boot: int = 1000, detector: str = "",
               render_dir: Path | None = None, sam_checkpoint: str = "",
               device: str = "auto", table_copy: Path | None = None) -> tuple[pd.DataFrame | None, list[str]]:
    """(AUROC table or None when no data folder is present, notes). Writes real_predictions.csv and real_auroc.csv
    (with a signal reader also real_readers.csv: the image model, the signal reader and the ensemble side by side)
    in out (the table also to table_copy when given: step 05 keeps it beside its other tables); the renders go to
    render_dir (default: out), cached by settings, so runs that share it render once."""
    folders, notes = present_folders(data)
    if not folders:
        return None, notes + ["no real ECG folder present: the real-ECG check is skipped"]

    load_package(Path(model))  # a bad package fails before anything is rendered
    out.mkdir(parents=True, exist_ok=True)
    scored = score(model, render_real(folders, Path(render_dir or out), page, photo_max_side, seed, limit), detector,
                   sam_checkpoint, device)
    table = auroc_with_ci(scored, n_boot)
    atomic_write_text(out / "real_predictions.csv", scored.to_csv(index=False))
    readers = readers_table(scored, n_boot)
    if len(readers):
        for path in [out / "real_readers.csv"] + ([Path(table_copy).parent / "real_readers.csv"] if table_copy else []):
            atomic_write_text(path, readers.to_csv(index=False))
        notes.append("the three readers on these records (real_readers.csv):\n" + readers.to_string(index=False))
    for path in [out / "real_auroc.csv"] + ([Path(table_copy)] if table_copy else []):
        atomic_write_text(path, table.to_csv(index=False))
    return table, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.ensemble.realcheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="ensemble package (step 05's model.pt)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="PTB-XL-layout folders, comma-separated")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "realcheck", help="renders and results")
    ap.add_argument("--page", default="1100x850", help="page size WxH in px (the demo's)")
    ap.add_argument("--photo-max-side", type=int, default=1400)
    ap.add_argument("--seed", type=int, default=2024, help="seed of the paper and photo styles")
    ap.add_argument("--limit", type=int, default=0, help="at most this many records per folder (0: all)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--detector", default="", help="YOLO weights; default: the classical sheet finder")
    ap.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N")
    a = add_debug(ap).parse_args(argv)
    if not a.model.is_file():
        return fail(f"--model {a.model}: no such file")
    try:
        w, h = (int(v) for v in a.page.lower().split("x"))
    except ValueError:
        return fail(f"--page {a.page!r}: use WxH, e.g. 1100x850")

    def body(a) -> int:
        table, notes = real_check(a.model, a.data, a.out, (w, h), a.photo_max_side, a.seed, a.limit, a.bootstrap,
                                  a.detector, device=a.device)
        for note in notes:
            print(f"note: {note}")
        if table is not None:
            print(table.to_string(index=False))
            print(f"written: {a.out / 'real_auroc.csv'}, {a.out / 'real_predictions.csv'}")
        return 0

    return run_cli(body, a)


if __name__ == "__main__":
    sys.exit(main())
