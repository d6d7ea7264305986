"""The page reader and the turn measured: `python -m utils.bench.page --model model.pt --run outputs/demo/latest
[--real ../shared/data/real-ecg-images-unlabeled [--real ...]] [--pictures 100]`.

Each ECG picture (the run's test photos; real ECG pictures when a folder is given, taken as upright) is read as it
is and turned by 90, 180 and 270 degrees: the share the page reader calls an ECG, and the share the traces' rule
(utils/preprocess/orient.py) would turn back right, turn wrong or leave as it is, at the package's `turn_evidence`
and at 2, 3 and 4 (measured as if `turn_pages` were on); the page reader's own turn head beside it, for comparison.
Pictures that hold no ECG (the sample photos that ship in scikit-image, when it is installed, in ultralytics and in
matplotlib; white, black, grey and noise pages; text, graph paper, shapes, surfaces and gradients drawn here, of the
kinds the page reader learns from but not the same pictures) give the share wrongly called an ECG. Each ECG gate
(utils/ensemble/page.py's GATES: the traces, and the page reader, either or both at several of the reader's
thresholds) is measured on every set. On the run's test photos the ensemble's probabilities of each turned page, as
the predictor handles it, are compared with the upright page's (mean and largest absolute difference). Prints the tables and writes them to outputs/page/<date>/
(pictures.csv, page.csv, gates.csv, turns.csv, page.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from utils.core.progress import tqdm

from utils.bench.stability import test_pictures
from utils.core.atomic import atomic_write_text, new_folder
from utils.core.cli import add_debug, run_cli
from utils.core.imageio import IMAGE_EXTS, ImageReadError, read_image
from utils.core.paths import REPO_ROOT
from utils.ensemble.page import NON_ECG_KINDS, TURNS, ecg_verdict, non_ecg_picture
from utils.ensemble.predictor import Predictor
from utils.preprocess.orient import find_turn


def plain_pages(size: tuple[int, int] = (850, 1100), seed: int = 0) -> dict[str, np.ndarray]:
    """Pages that hold nothing: white, black, grey and uniform noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    return {"white page": np.full((h, w, 3), 255, np.uint8), "black page": np.zeros((h, w, 3), np.uint8),
            "grey page": np.full((h, w, 3), 128, np.uint8), "noise page": rng.integers(0, 256, (h, w, 3), np.uint8)}


def readable_pictures(paths) -> dict[str, np.ndarray]:
    """The pictures among `paths` (by name) that decode; files that are not pictures, or do not decode, left out."""
    out = {}
    for p in sorted(paths):
        if p.suffix.lower() in IMAGE_EXTS:
            try:
                out[p.name] = read_image(p, min_side=1).image
            except ImageReadError:
                continue
    return out


def sample_photos() -> dict[str, np.ndarray]:
    """scikit-image's sample photos that ship in its wheel (none when it is not installed)."""
    try:
        import skimage
    except ImportError:
        return {}
    return readable_pictures((Path(skimage.__file__).parent / "data").iterdir())


def library_photos() -> dict[str, np.ndarray]:
    """The sample pictures that ship in ultralytics' and matplotlib's wheels."""
    import matplotlib
    import ultralytics

    folders = [Path(ultralytics.__file__).parent / "assets",
               Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"]
    return readable_pictures(q for folder in folders if folder.is_dir() for q in folder.rglob("*"))


def drawn_pictures(each: int = 4, seed: int = 2024) -> dict[str, np.ndarray]:
    """Pictures without an ECG drawn as the page reader's negatives are (utils/ensemble/page.py), `each` of every
    kind but blank (plain_pages has those), from a seed of their own."""
    rng = np.random.default_rng(seed)
    return {f"{kind} {i}": non_ecg_picture(rng, kind) for kind in NON_ECG_KINDS if kind != "blank" for i in range(each)}


def read_turns(predictor: Predictor, pictures: dict[str, np.ndarray], kind: str, compare: bool = False) -> list[dict]:
    """One row per (picture, turn): what the page reader and the traces said, and with `compare` the ensemble's
    largest change of probability against the upright picture."""
    rows = []
    for name, img in tqdm(pictures.items(), desc=f"page reader: {kind}", unit="picture"):
        base = predictor.verdict(predictor.read_one(img, keep=False))[0] if compare else None
        for turn in TURNS:
            turned = np.ascontiguousarray(np.rot90(img, turn // 90))
            page = predictor.page.read(turned) if predictor.page is not None else {}
            orient = find_turn(turned, 0.0)
            row = {"set": kind, "picture": name, "turn": turn, "ecg_score": page.get("ecg_score", np.nan),
                   "is_ecg": page.get("is_ecg", np.nan), "turn_found": orient["turn_found"],
                   "evidence": orient["turn_evidence"], "beats": orient["beats"], "rows": orient["rows"],
                   "reader_turn": page.get("reader_turn", np.nan)}
            if compare:
                scores = predictor.verdict(predictor.read_one(turned, keep=False))[0]
                row["max_abs_change"] = float(np.abs(scores - base).max())
            rows.append(row)
    return rows


def turned_back(rows: pd.DataFrame, evidence: float) -> pd.Series:
    """The turn the predictor would undo at this evidence: the traces' turn where they are sure, else 0."""
    return rows["turn_found"].where(rows["evidence"] >= evidence, 0)


def summary(rows: pd.DataFrame, evidence: float) -> pd.DataFrame:
    """Per set and turn: how many, the share called an ECG, and (ECG sets) turned back right, wrong or left at this
    evidence, and the share the page reader's own head finds right."""
    out = []
    rows = rows.assign(turned_back=turned_back(rows, evidence))
    for (kind, turn), g in rows.groupby(["set", "turn"], sort=False):
        r = {"set": kind, "turn": turn, "pictures": len(g), "called_ecg": g["is_ecg"].mean()}
        if not kind.startswith("no ECG"):
            r.update(turned_right=(g["turned_back"] == turn).mean() if turn else np.nan,
                     turned_wrong=((g["turned_back"] != turn) & (g["turned_back"] != 0)).mean(),
                     left_as_is=(g["turned_back"] == 0).mean() if turn else np.nan,
                     reader_head_right=(g["reader_turn"] == turn).mean())
        if "max_abs_change" in g and g["max_abs_change"].notna().any():
            r.update(mean_max_abs_change=g["max_abs_change"].mean(), largest_change=g["max_abs_change"].max())
        out.append(r)
    return pd.DataFrame(out)


SCORES = (0.5, 0.9, 0.95, 0.98)  # the page reader's ECG thresholds the gates are measured at


def gate_table(rows: pd.DataFrame, scores=SCORES) -> pd.DataFrame:
    """Per set: the share of its pictures (each turn counted) that each gate calls an ECG (utils/ensemble/page.py's
    ecg_verdict on the row's readings): the traces alone, then the page reader, either and both with the reader's
    ECG threshold at each of `scores`."""
    def share(g: pd.DataFrame, gate: str, score: float) -> float:
        return float(np.mean([ecg_verdict({"ecg_score": r.ecg_score, "is_ecg": r.ecg_score >= score},
                                          {"rows": r.rows, "beats": r.beats}, gate)["is_ecg"]
                              for r in g.itertuples()]))

    out = []
    for kind, g in rows.groupby("set", sort=False):
        r = {"set": kind, "pictures": len(g), "traces": share(g, "traces", 0.5)}
        for score in scores:
            r.update({f"{gate} >= {score}": share(g, gate, score) for gate in ("reader", "either", "both")})
        out.append(r)
    return pd.DataFrame(out)


def turn_table(rows: pd.DataFrame, levels=(2.0, 3.0, 4.0)) -> pd.DataFrame:
    """For the ECG sets, at each evidence level: of the upright pages, the share turned (wrongly); of the turned
    pages, the share turned back right and turned wrong."""
    out = []
    ecg = rows[~rows["set"].str.startswith("no ECG")]
    for (kind, level) in [(k, lv) for k in ecg["set"].unique() for lv in levels]:
        g = ecg[ecg["set"] == kind].assign(back=lambda d: turned_back(d, level))
        up, turned = g[g["turn"] == 0], g[g["turn"] != 0]
        out.append({"set": kind, "evidence": level, "upright_turned_wrongly": (up["back"] != 0).mean(),
                    "turned_found_right": (turned["back"] == turned["turn"]).mean(),
                    "turned_turned_wrong": ((turned["back"] != turned["turn"]) & (turned["back"] != 0)).mean()})
    return pd.DataFrame(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.page", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a package with a page reader (step 05's model.pt)")
    ap.add_argument("--run", type=Path, required=True, help="the run whose test photos are used")
    ap.add_argument("--real", type=Path, action="append", default=[],
                    help="a folder of real ECG pictures, taken as upright (again for another folder)")
    ap.add_argument("--pictures", type=int, default=100, help="test photos and real pictures, at most")
    ap.add_argument("--compare", type=int, default=20, help="test photos whose probabilities are compared turned")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "page", help="results folder root")
    ap.add_argument("--evidence", type=float, help="the traces' evidence a turn needs (default: the package's)")
    ap.add_argument("--device", default="auto")
    return run_cli(_run, add_debug(ap).parse_args(argv))


def _pictures(paths: list[Path], skipped: list[str]) -> dict[str, np.ndarray]:
    """The readable pictures by name; each unreadable one added to `skipped` with why."""
    out = {}
    for p in paths:
        try:
            out[p.name] = read_image(p).image
        except ImageReadError as exc:
            skipped.append(str(exc))
    return out


def _run(a) -> int:
    predictor = Predictor(a.model, device=a.device)
    evidence = a.evidence if a.evidence is not None else predictor.orient["turn_evidence"]
    if not np.isfinite(evidence):
        raise ValueError(f"--model {a.model}: this package never turns a page; give --evidence")
    predictor.orient.update(turn_pages=True, turn_evidence=evidence)  # as if turning were on
    skipped: list[str] = []
    test = _pictures(test_pictures(a.run, None, a.pictures), skipped)
    compared = dict(list(test.items())[:a.compare])
    rows = read_turns(predictor, compared, "synthetic test photos", compare=True)
    rows += read_turns(predictor, dict(list(test.items())[a.compare:]), "synthetic test photos")
    for folder in a.real:
        rows += read_turns(predictor, _pictures(test_pictures(None, folder, a.pictures), skipped),
                           f"real ECG pictures: {folder.name}")
    rows += read_turns(predictor, sample_photos(), "no ECG: scikit-image photos")
    rows += read_turns(predictor, library_photos(), "no ECG: ultralytics and matplotlib samples")
    rows += read_turns(predictor, plain_pages(), "no ECG: white, black, grey, noise")
    rows += read_turns(predictor, drawn_pictures(), "no ECG: drawn text, grids, shapes, surfaces")
    table, turns = summary(pd.DataFrame(rows), evidence), turn_table(pd.DataFrame(rows))
    gates = gate_table(pd.DataFrame(rows))
    out = new_folder(Path(a.out) / dt.date.today().isoformat())
    pd.DataFrame(rows).to_csv(out / "pictures.csv", index=False)
    table.to_csv(out / "page.csv", index=False)
    turns.to_csv(out / "turns.csv", index=False)
    gates.to_csv(out / "gates.csv", index=False)
    text = f"# The page reader and the turn: {a.model} (turn_evidence {evidence})\n\n" \
        f"{table.to_markdown(index=False, floatfmt='.3f')}\n\n## The share called an ECG by each gate\n\n" \
        f"{gates.to_markdown(index=False, floatfmt='.3f')}\n\n## The traces' turn at other evidence levels\n\n" \
        f"{turns.to_markdown(index=False, floatfmt='.3f')}\n" + \
        ("\nskipped (unreadable):\n" + "\n".join(skipped) + "\n" if skipped else "")
    atomic_write_text(out / "page.md", text)
    print(text + f"written: {out / 'page.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
