"""How well the digitiser reads the leads back: `python -m utils.bench.digitise [--synthetic 30]
[--levels 0.5,1,1.5] [--real ../shared/data/ptbxl-dev --real-limit 100] [--pictures DIR] [--segmenter FILE] [--wfdb]
[--workers 2]`.

Pictures whose true signals are known: the synthesizer's scans and photos (new seeds, apart from any training set)
at each artefact level (`severity`), and, with --real, recorded PTB-XL signals drawn by the project's renderer as
photos (the real check's pictures). Each picture goes the predictor's way: stood upright when its traces are sure it
is turned (or, when too few rows stand across it, by the turn they lean to), then digitised
(utils/digitise/trace.py). Per lead, the PhysioNet Challenge 2024's SNR (dB) and Pearson correlation over the
seconds the page shows it (utils/digitise/records.py), within 50 ms and within the Kaggle metric's 0.2 s. Beside it,
what a perfect mask allows: each picture's true traces (utils/synth/traces.py) as the segmenter's targets (a line of
the stroke's width; per column, where the trace was at that column's instant), followed by the classical reading
(the reading's own losses), and as the column mask read back per column, in the picture as drawn and levelled (a
perfect rectification: the ceiling), all at 0.2 s. With --segmenter, the reading of the segmenter's mask beside the
classical ink's; with --pictures, real pictures without signals: how many each reader reads and how well the leads
read obey Einthoven's and Goldberger's laws. Prints per set and level: pictures, share digitised, the median r and
mean SNR over leads read, the share of leads read with r >= 0.8; per lead; and why pictures were not read. Writes
leads.csv, pictures.csv, digitise.md and a figure (a photo, the traces found over it, leads read back against the
truth) to outputs/digitise/<date>/, with --segmenter a second one (segmented.png: a real record's photo, else a
synthetic picture, the segmenter's mask, leads read through it and through the ink against the truth); with --wfdb,
the records too.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from utils.core.atomic import atomic_write_text, new_folder
from utils.core.cli import add_debug, fail, run_cli
from utils.core.imageio import ImageReadError, read_image, walk_pictures
from utils.core.figures import pyplot
from utils.core.paths import REPO_ROOT, present_folders
from utils.core.pool import pool_map
from utils.digitise.records import lead_accuracy, write_record
from utils.digitise.segment import TARGETS, load as load_segmenter, loaded as loaded_segmenter, mask_of, target, \
    to_work
from utils.digitise.trace import FS, SECONDS, digitise_turned, read_page
from utils.preprocess.orient import find_turn, upright
from utils.synth.generate import SynthSettings, make_picture
from utils.synth.traces import Traces, column_mask, extent, levelled, read_back, read_columns
from utils.synth.waveform import LEADS
from utils.synth.wfdb_source import RecordError, list_records, load_signals

TURN_EVIDENCE = 3.0  # the predictor's default
KAGGLE_SHIFT = int(0.2 * FS)  # the 2025-26 Kaggle digitisation metric forgives a shift of up to 0.2 s


def picture(job: dict) -> tuple[np.ndarray, np.ndarray, Traces]:
    """The job's picture (BGR), its true signals at FS, (12, FS * SECONDS), and its traces as drawn."""
    settings = SynthSettings(**job["settings"])
    signals = load_signals(job["ref"], fs=settings.fs) if job.get("ref") is not None else None
    sample = make_picture(settings, job["index"], signals=signals,
                          labels=job["ref"].labels if job.get("ref") is not None else None)
    img = cv2.imdecode(np.frombuffer(sample.jpeg, np.uint8), cv2.IMREAD_COLOR)
    true = resample_poly(np.asarray(sample.signals, np.float64), FS, settings.fs, axis=1)[:, :int(FS * SECONDS)]
    return img, true, sample.traces


def _snr(read: np.ndarray, true: np.ndarray, max_shift: int) -> list[float]:
    return [row["snr_db"] for row in lead_accuracy(read, true, max_shift) if row["samples"]]


def measure(job: dict) -> dict:
    """One picture: stood upright as the predictor would, digitised, scored per lead against its truth (within
    50 ms, and within the Kaggle metric's 0.2 s); beside it, the ceiling: its true trace mask read back per column,
    as drawn in the picture and levelled (utils/synth/traces.py)."""
    try:
        img, true, traces = picture(job)
    except RecordError as exc:
        return {**job["key"], "problem": f"not rendered: {exc}", "leads": [], "digitised": None, "ceiling": {},
                "learned": {}}
    d, turn = digitise_turned(img, find_turn(img, TURN_EVIDENCE))
    leads = lead_accuracy(d.signals, true) if d.read else []
    wide = {row["lead"]: row["snr_db"] for row in lead_accuracy(d.signals, true, KAGGLE_SHIFT)} if d.read else {}
    leads = [{**row, "snr_db_02": wide[row["lead"]]} for row in leads]
    learned = {}
    if job.get("segmenter"):
        dl, _ = digitise_turned(img, find_turn(img, TURN_EVIDENCE), segmenter=loaded_segmenter(job["segmenter"]))
        learned = {"problem": dl.problem, "leads": lead_accuracy(dl.signals, true, KAGGLE_SHIFT) if dl.read else []}
    work = to_work(img)  # the classical reading on the true masks: what reading loses once the mask is perfect
    ceiling = {}
    for kind in TARGETS:
        on_true = read_page(img, mask=target(traces.scaled(work.shape[1] / img.shape[1]), work.shape, kind) >= 128)
        ceiling[f"classical on true {kind} mask"] = _snr(on_true.signals, true, KAGGLE_SHIFT) if on_true.read else []
    for name, t in (("columns", traces), ("levelled", levelled(traces))):
        shape = img.shape[:2] if name == "columns" else extent(t)
        ceiling[name] = _snr(read_back(t, read_columns(column_mask(t, shape))), true, KAGGLE_SHIFT)
    return {**job["key"], "problem": d.problem, "layout": d.note(), "turned": turn, "rectified": d.rectified,
            "leads": leads, "digitised": d, "ceiling": ceiling, "learned": learned}


def unlabelled(job: dict) -> dict:
    """A real picture whose signals nobody knows: read as the predictor would, classically and (given one) through
    the segmenter's mask; per reading, whether it was read and how well its leads obey Einthoven's and Goldberger's
    laws (`Digitised.agreement`: 1 is perfect, no truth needed)."""
    try:
        img = read_image(job["path"]).image
    except ImageReadError as exc:
        return {"picture": job["name"], "problem": f"not read: {exc}"}
    orient = find_turn(img, TURN_EVIDENCE)
    row = {"picture": job["name"], "problem": ""}
    readers = [("classical", None)] + ([("segmenter", loaded_segmenter(job["segmenter"]))]
                                       if job.get("segmenter") else [])
    for name, model in readers:
        d, _ = digitise_turned(img, orient, segmenter=model)
        row[f"{name} read"] = d.read
        row[f"{name} agreement"] = round(d.agreement, 3) if d.read else np.nan
        row[f"{name} note"] = d.note()
    return row


def unlabelled_table(rows: list[dict]) -> pd.DataFrame:
    """Per reader: pictures read and the median agreement over those read."""
    df = pd.DataFrame(rows)
    out = []
    for name in ("classical", "segmenter"):
        if f"{name} read" in df:
            read = df[f"{name} read"].fillna(False).astype(bool)
            out.append({"reader": name, "pictures": len(df), "read": f"{read.mean():.0%}",
                        "median agreement": round(float(df.loc[read, f"{name} agreement"].median()), 3),
                        "agreement >= 0.8": f"{(df[f'{name} agreement'] >= 0.8).mean():.0%}"})
    return pd.DataFrame(out)


def jobs(synthetic: int, levels: list[float], real: list[Path], real_limit: int, seed: int) -> list[dict]:
    out = []
    for style in ("scan", "photo"):
        for level in levels:
            s = SynthSettings(style=style, seed=seed, page_width=1100, page_height=850, photo_max_side=1400,
                              severity=level).to_dict()
            s.pop("version")
            s["layouts"] = tuple(s["layouts"])
            out += [{"settings": s, "index": i, "key": {"set": f"synthetic {style}", "level": level, "id": str(i)}}
                    for i in range(synthetic)]
    for folder in real:
        refs, _ = list_records(folder)
        s = SynthSettings(style="photo", seed=2024, page_width=1100, page_height=850, photo_max_side=1400).to_dict()
        s.pop("version")
        s["layouts"] = tuple(s["layouts"])
        out += [{"settings": s, "index": i, "ref": ref, "key": {"set": f"{folder.name} rendered as photos",
                                                                "level": 1.0, "id": ref.id}}
                for i, ref in enumerate(refs[:real_limit] if real_limit else refs)]
    return out


def summarise(results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per set and level, per lead, per picture)."""
    pics = pd.DataFrame([{**{k: v for k, v in r.items() if k not in ("leads", "digitised", "ceiling", "learned")},
                          **({"learned problem": r["learned"]["problem"]} if r["learned"] else {}),
                          **{f"ceiling {k} dB": round(float(np.nanmean(v)), 2) if v else np.nan
                             for k, v in r["ceiling"].items()}} for r in results])
    leads = pd.DataFrame([{**{k: r[k] for k in ("set", "level", "id")}, **lead} for r in results
                          for lead in r["leads"]])
    rows = []
    for (name_, level), group in pics.groupby(["set", "level"], sort=False):
        lg = leads[(leads["set"] == name_) & (leads["level"] == level)] if len(leads) else leads
        shown = lg[lg["samples"] > 0] if len(lg) else lg
        rows.append({"set": name_, "level": level, "pictures": len(group),
                     "digitised": f"{(group['problem'] == '').mean():.0%}",
                     "median r": round(float(shown["r"].median()), 3) if len(shown) else np.nan,
                     "mean SNR dB": round(float(shown["snr_db"].mean()), 2) if len(shown) else np.nan,
                     "mean SNR dB, 0.2 s": round(float(shown["snr_db_02"].mean()), 2) if len(shown) else np.nan,
                     **{f"true mask, {name}, dB 0.2 s": round(float(np.nanmean(values)), 2) if values else np.nan
                        for name in ("classical on true line mask", "classical on true column mask", "columns",
                                     "levelled")
                        for values in [[v for r in results if (r["set"], r["level"]) == (name_, level)
                                        for v in r["ceiling"].get(name, [])]]},
                     **_learned_columns([r for r in results if (r["set"], r["level"]) == (name_, level)]),
                     "median SNR dB": round(float(shown["snr_db"].median()), 2) if len(shown) else np.nan,
                     "leads r>=0.8": f"{(shown['r'] >= 0.8).mean():.0%}" if len(shown) else ""})
    per_lead = leads.groupby(["set", "lead"], sort=False)["r"].median().unstack("lead")[list(LEADS)].round(2) \
        if len(leads) else pd.DataFrame()
    return pd.DataFrame(rows), per_lead.reset_index() if len(per_lead) else per_lead, pics


def _learned_columns(results: list[dict]) -> dict:
    """The segmenter's reading of the same pictures, where one was given: share digitised, median r, mean SNR."""
    if not any(r["learned"] for r in results):
        return {}
    leads = [row for r in results for row in r["learned"].get("leads", []) if row["samples"]]
    return {"segmenter digitised": f"{np.mean([r['learned'].get('problem', 'x') == '' for r in results]):.0%}",
            "segmenter median r": round(float(np.nanmedian([row["r"] for row in leads])), 3) if leads else np.nan,
            "segmenter mean SNR dB, 0.2 s": round(float(np.nanmean([row["snr_db"] for row in leads])), 2)
            if leads else np.nan}


def _lead_axis(a, title: str, legend: bool) -> None:
    """A lead's panel in the figures: its title, seconds against mV, the legend on the first."""
    a.set_title(title, fontsize=10)
    a.set_xlabel("s")
    a.set_ylabel("mV")
    if legend:
        a.legend(fontsize=8, loc="upper right")


def segmented_figure(img: np.ndarray, true: np.ndarray, model, name: str, path: Path) -> None:
    """A picture, the segmenter's trace mask over it, and three leads read through that mask and through the
    classical ink against the truth."""
    plt = pyplot()
    orient = find_turn(img, TURN_EVIDENCE)
    learned, turn = digitise_turned(img, orient, segmenter=model)
    classical, _ = digitise_turned(img, orient)
    shown = upright(img, turn) if turn else img
    prob = mask_of(model, shown)
    fig = plt.figure(figsize=(15, 9), constrained_layout=True)
    grid = fig.add_gridspec(3, 3, width_ratios=[1, 1, 1.1])
    work = to_work(shown)
    for k, (title, picture_) in enumerate((("the picture", cv2.cvtColor(work, cv2.COLOR_BGR2RGB)),
                                           ("the segmenter's trace mask", prob))):
        ax = fig.add_subplot(grid[:, k])
        ax.imshow(picture_, cmap="gray_r" if k else None, vmin=0, vmax=1 if k else None)
        ax.set_title(f"{title} ({name})", fontsize=10)
        ax.axis("off")
    t = np.arange(true.shape[1]) / FS
    acc = {row["lead"]: row for row in lead_accuracy(learned.signals, true, KAGGLE_SHIFT)} if learned.read else {}
    for k, lead in enumerate(("II", "V2", "aVL")):
        i = LEADS.index(lead)
        a = fig.add_subplot(grid[k, 2])
        seen = np.isfinite(true[i]) & (np.isfinite(learned.signals[i]) | np.isfinite(classical.signals[i]))
        if seen.any():
            a.plot(t[seen], true[i, seen] - np.median(true[i, seen]), color="black", lw=1.2, label="true signal")
        for d, colour, label in ((classical, "#b0b0b0", "ink mask"), (learned, "#0050ff", "segmenter mask")):
            ok = np.isfinite(d.signals[i])
            a.plot(t[ok], d.signals[i, ok], color=colour, lw=1.0, label=label)
        note = f"r {acc[lead]['r']:.2f}, SNR {acc[lead]['snr_db']:.1f} dB" if lead in acc and acc[lead]["samples"] \
            else "not read"
        _lead_axis(a, f"{lead} through the segmenter's mask: {note}", legend=k == 0)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def figure(result: dict, img: np.ndarray, true: np.ndarray, path: Path) -> None:
    """The photo with the traces found drawn over it, and three leads read back against the truth."""
    plt = pyplot()
    d = result["digitised"]
    fig = plt.figure(figsize=(14, 9), constrained_layout=True)
    grid = fig.add_gridspec(3, 2, width_ratios=[1.25, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    for name, x, y, _ in d.paths:
        ax.plot(x, y, lw=1.0, color="#0050ff")
        ax.text(x[0], y[0] - 12, name, color="#0050ff", fontsize=7)
    ax.set_title(f"traces found ({d.note()})", fontsize=10)
    ax.axis("off")
    t = np.arange(true.shape[1]) / FS
    acc = {r["lead"]: r for r in result["leads"]}
    for k, lead in enumerate(("II", "V2", "aVL")):
        i = LEADS.index(lead)
        shown = np.isfinite(d.signals[i])
        a = fig.add_subplot(grid[k, 1])
        truth = true[i, shown] - np.median(true[i, shown])
        a.plot(t[shown], truth, color="black", lw=1.2, label="true signal")
        a.plot(t[shown], d.signals[i, shown], color="#0050ff", lw=1.0, label="read back")
        _lead_axis(a, f"{lead}: r {acc[lead]['r']:.2f}, SNR {acc[lead]['snr_db']:.1f} dB", legend=k == 0)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.digitise", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", type=int, default=30, help="scans and photos per artefact level")
    ap.add_argument("--levels", default="0.5,1,1.5", help="artefact levels (the synthesizer's severity)")
    ap.add_argument("--real", action="append", default=[], help="WFDB folder with labels, rendered as photos")
    ap.add_argument("--real-limit", type=int, default=100, help="records per real folder (0: all)")
    ap.add_argument("--seed", type=int, default=2026, help="the synthetic pictures' seed (apart from training's)")
    ap.add_argument("--workers", type=int, default=0, help="processes (0: one per free core)")
    ap.add_argument("--wfdb", action="store_true", help="also write every digitised record (WFDB) under records/")
    ap.add_argument("--pictures", type=Path, help="a folder of real ECG pictures without signals: how many each "
                    "reader reads, and how well the leads read obey the limb leads' laws")
    ap.add_argument("--segmenter", type=Path, help="a trace segmenter (utils/digitise/segment.py): its mask read too")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "digitise")
    a = add_debug(ap).parse_args(argv)
    try:
        levels = [float(v) for v in a.levels.split(",") if v.strip()]
    except ValueError:
        return fail(f"--levels {a.levels!r}: expected numbers separated by commas, e.g. 0.5,1,1.5")
    if a.synthetic < 0 or a.real_limit < 0:
        return fail("--synthetic and --real-limit must be at least 0")

    def body(a) -> int:
        folders, notes = present_folders(",".join(a.real))
        for note in notes:
            print(f"note: {note}")
        todo = jobs(a.synthetic, levels, folders, a.real_limit, a.seed)
        if a.segmenter:
            load_segmenter(a.segmenter)  # a damaged file is said before any picture is drawn
            todo = [{**j, "segmenter": str(a.segmenter)} for j in todo]
        if not todo and not a.pictures:
            return fail("nothing to measure: give --synthetic above 0, a --real folder that exists or --pictures")
        results = list(pool_map(measure, todo, a.workers, desc="digitise", unit="img"))
        table, per_lead, pics = summarise(results) if results else \
            (pd.DataFrame(), pd.DataFrame(), pd.DataFrame(columns=["set", "level", "id", "problem"]))
        out = new_folder(a.out / dt.date.today().isoformat())
        real_text = ""
        if a.pictures:
            found, skipped = walk_pictures(a.pictures)
            for note in skipped:
                print(f"note: {note}")
            rows = list(pool_map(unlabelled, [{"path": p, "name": str(p.relative_to(a.pictures)),
                                               "segmenter": str(a.segmenter) if a.segmenter else ""}
                                              for p in found], a.workers, desc="real pictures", unit="img"))
            atomic_write_text(out / "real-pictures.csv", pd.DataFrame(rows).to_csv(index=False))
            real_text = (f"\n\nReal pictures without signals ({a.pictures}): read, and the limb leads' agreement "
                         f"(II = I + III, -aVR = aVL + aVF)\n\n{unlabelled_table(rows).to_markdown(index=False)}\n")
        lead_rows = pd.DataFrame([{**{k: r[k] for k in ("set", "level", "id")}, **lead} for r in results
                                  for lead in r["leads"]])
        atomic_write_text(out / "leads.csv", lead_rows.to_csv(index=False))
        atomic_write_text(out / "pictures.csv", pics.to_csv(index=False))
        problems = pics[pics["problem"] != ""]
        text = (f"# Digitiser accuracy\n\n{table.to_markdown(index=False)}\n\nMedian r per lead:\n\n"
                f"{per_lead.to_markdown(index=False) if len(per_lead) else '(none read)'}\n\n"
                f"Not digitised ({len(problems)}):\n\n" +
                "".join(f"- {p['set']} {p['level']} {p['id']}: {p['problem']}\n" for _, p in problems.iterrows())
                + real_text)
        atomic_write_text(out / "digitise.md", text)
        if a.wfdb:
            for r in results:
                if r["digitised"] is not None and r["digitised"].read:
                    write_record(r["digitised"], f"{r['set'].split()[0]}-{r['level']}-{r['id']}".replace(".", "_"),
                                 out / "records")
        synthetic = [(j, r) for j, r in zip(todo, results) if "ref" not in j and r["leads"]
                     and j["key"]["set"] == "synthetic photo"]
        if synthetic:
            j, r = max(synthetic[:10], key=lambda jr: np.nanmedian([x["r"] for x in jr[1]["leads"]]))
            img, true, _ = picture(j)
            figure(r, upright(img, r["turned"]) if r["turned"] else img, true, out / "digitised.png")
        read = [(j, r) for j, r in zip(todo, results) if r["learned"].get("leads")]
        real = [(j, r) for j, r in read if "ref" in j] or \
            [(j, r) for j, r in read if "photo" in j["key"]["set"]] or read
        if real:  # a real record's photo (else a synthetic one) whose segmenter reading is the median one
            order = sorted(real, key=lambda jr: np.nanmedian([x["r"] for x in jr[1]["learned"]["leads"]]))
            j, _ = order[len(order) // 2]
            img, true, _ = picture(j)
            segmented_figure(img, true, loaded_segmenter(j["segmenter"]), j["key"]["id"], out / "segmented.png")
        print(text)
        print(f"written: {out}")
        return 0

    return run_cli(body, a)


if __name__ == "__main__":
    sys.exit(main())
