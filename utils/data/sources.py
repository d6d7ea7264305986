"""Source registry: one loader per data source, each returning manifest rows with labels and a known-mask.

Every loader returns (rows, problems): rows are dicts with image, id, source, style, split, the five labels
(0/1, or None when the source says nothing), group and provenance; problems are (kind, where, detail) triples
that end up in the data-check report instead of crashing the run.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from utils.core.imageio import IMAGE_EXTS
from utils.core.labels import LABELS, LabelTableError, find_columns, read_label_table, read_table

# Class folders of the Kaggle scan sets (Khan et al. 2021 "ECG Images dataset of Cardiac and COVID-19 Patients",
# the COVID-19 ECG set built from it, and the National Heart Foundation 2023 set), matched by keywords.
# A class fixes only what it says: MI patients are MI-positive; "normal" is negative for all five; the other
# "abnormal heartbeat" patients are the set's non-MI class, and say nothing reliable about AF, HYP, CD or STTC
# (unknown, masked); COVID-19 says nothing about any label.
CLASS_MAP = (
    (("history", "mi"), {"MI": 1}),
    (("history", "myocard"), {"MI": 1}),
    (("myocardial",), {"MI": 1}),
    (("infarction",), {"MI": 1}),
    (("abnormal",), {"MI": 0}),
    (("covid",), {}),
    (("normal",), {k: 0 for k in LABELS}),
)


def class_labels(folder_name: str) -> dict | None:
    """Labels a class folder's name implies (missing keys: unknown), or None if the name is not recognised."""
    words = re.sub(r"[^a-z]+", " ", folder_name.lower())
    tokens = set(words.split())
    for keys, labels in CLASS_MAP:
        if all(any(t.startswith(k) for t in tokens) for k in keys):
            return {k: labels.get(k) for k in LABELS}
    return None


def _row(image: Path, rid: str, source: str, style: str, split: str, labels: dict, group: str, prov: str) -> dict:
    return {"image": str(image), "id": rid, "source": source, "style": style, "split": split,
            **{k: labels.get(k) for k in LABELS}, "group": group or rid, "provenance": prov}


def load_class_folders(root: Path, source: str) -> tuple[list[dict], list[tuple]]:
    """A scan set laid out as one folder per class (any depth); unrecognised class folders are reported."""
    root = Path(root)
    rows, problems = [], []
    folders = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS})
    for folder in folders:
        labels = class_labels(folder.name)
        if labels is None:
            problems.append(("unknown_class", str(folder), "folder name matches no class of CLASS_MAP; skipped"))
            continue
        for img in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            rid = f"{source}:{img.relative_to(root).with_suffix('').as_posix()}"
            rows.append(_row(img, rid, source, "scan", "stage1", labels, "", f"{root}: class '{folder.name}'"))
    return rows, problems


def load_synth(root: Path, source: str | None = None) -> tuple[list[dict], list[tuple]]:
    """A folder made by `python -m utils.synth` (simulated, or WFDB renders such as CODE-15% or PTB-XL)."""
    import json

    root = Path(root)
    meta = json.loads((root / "synth.json").read_text()) if (root / "synth.json").is_file() else {}
    style = meta.get("settings", {}).get("style", "scan")
    rows, problems = [], []
    for split, csv_name in (("train", "train.csv"), ("test", "test_labels.csv")):
        if not (root / csv_name).is_file():
            continue
        df, dupes = read_label_table(root / csv_name)
        problems += dupes
        for rec in df.to_dict("records"):
            ann_path = root / "annotations" / f"{rec['id']}.json"
            ann = json.loads(ann_path.read_text()) if ann_path.is_file() else {}
            src = source or ("synth" if ann.get("source", "simulated") == "simulated" else ann["source"])
            image = root / ann.get("image", f"{split}/{rec['id']}.jpg")
            labels = {k: rec[k] for k in LABELS}
            row = _row(image, f"{src}:{rec['id']}", src, style, split, labels, ann.get("group", ""), str(root))
            row["ecg_id"] = ptbxl_id(rec["id"]) if src == "ptbxl" else None
            rows.append(row)
    if not rows:
        problems.append(("empty_source", str(root), "no train.csv or test_labels.csv rows"))
    return rows, problems


def ptbxl_id(text: str) -> int | None:
    """PTB-XL ecg_id in our render ids (ptbxl00001) or GenECG file names (02000_hr_1R)."""
    m = re.match(r"^(?:ptbxl)?0*(\d+)(?:_(?:hr|lr).*)?$", str(text))
    return int(m.group(1)) if m else None


GROUP_NAMES = ("patient_id", "patient", "subject_id", "group")


def find_labels_csv(root: Path) -> Path:
    """The competition's training labels: the CSV in root with an id column and the five labels."""
    tried = []
    for path in sorted(Path(root).glob("*.csv")):
        if "sample_submission" in path.name.lower():
            continue
        try:
            find_columns(read_table(path, nrows=5), str(path))
            return path
        except LabelTableError as exc:
            tried.append(f"{path.name}: {exc}")
    raise FileNotFoundError(f"no labels CSV with an id column and {list(LABELS)} in {root}"
                            + (f" (tried {'; '.join(tried)})" if tried else ""))


class ImageIndex:
    """Every image under a root, found by relative path or by file stem (ids given with or without extension)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.by_rel, self.by_stem = {}, {}
        for p in sorted(self.root.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                rel = p.relative_to(self.root).as_posix()
                self.by_rel[rel] = p
                self.by_stem.setdefault((p.parent.relative_to(self.root).as_posix(), p.stem), p)
                self.by_stem.setdefault(("*", p.stem), p)

    def resolve(self, value: str, folders=("train", "train_images", "images", "")) -> tuple[Path | None, str]:
        """(path, '') or (None, reason): confined to the root; exact path first, then stem in the usual folders."""
        text = str(value).strip()
        candidate = (self.root / text).resolve()
        if not candidate.is_relative_to(self.root):
            return None, "outside_root"
        if text in self.by_rel:
            return self.by_rel[text], ""
        stem = Path(text).stem if Path(text).suffix.lower() in IMAGE_EXTS else Path(text).name
        sub = Path(text).parent.as_posix()
        for folder in ([sub] if sub not in ("", ".") else []) + list(folders):
            hit = self.by_stem.get((folder.strip("/") or ".", stem))
            if hit is not None:
                return hit, ""
        hit = self.by_stem.get(("*", stem))
        return (hit, "") if hit is not None else (None, "missing_image")


def _group_of(rid: str, rec: dict, group_col: str | None) -> str:
    if group_col and not pd.isna(rec.get(group_col)):
        return f"patient:{rec[group_col]}"
    ecg = ptbxl_id(Path(str(rid)).stem)
    return f"ecg:{ecg}" if ecg is not None else str(rid)


def load_competition(root: Path) -> tuple[list[dict], list[tuple]]:
    """The competition folder: training rows from its labels CSV, test rows from sample_submission.csv."""
    root = Path(root)
    labels_csv = find_labels_csv(root)
    df, problems = read_label_table(labels_csv)
    group_col = next((c for c in df.columns if c.strip().lower() in GROUP_NAMES), None)
    index = ImageIndex(root)
    rows = []
    for rec in df.to_dict("records"):
        rid, n = rec["id"], rec["line"]
        where = f"{labels_csv.name}:{n} (id {rid})"
        labels = {k: rec[k] for k in LABELS}
        image, why = index.resolve(rid)
        if image is None:
            detail = "path points outside the source root; row rejected" if why == "outside_root" else \
                "no image file for this id"
            problems.append((why, where, detail))
            continue
        group = _group_of(rid, rec, group_col)
        rows.append(_row(image, f"competition:{Path(rid).stem}", "competition", "photo", "train", labels, group,
                         where) | {"ecg_id": ptbxl_id(Path(rid).stem)})
    used = {r["image"] for r in rows}
    sub = root / "sample_submission.csv"
    test_ids = []
    if sub.is_file():
        sdf = read_table(sub, dtype=str, keep_default_na=False)
        sid = find_columns(sdf, str(sub))[0]
        for n, rid in enumerate(sdf[sid].astype(str), start=2):
            image, why = index.resolve(rid, folders=("test", "test_images", "images", ""))
            if image is None:
                problems.append((why, f"sample_submission.csv:{n} (id {rid})", "test image not found"))
                continue
            used.add(str(image))
            test_ids.append(rid)
            rows.append(_row(image, f"competition:{Path(rid).stem}", "competition", "photo", "test",
                             {}, _group_of(rid, {}, None), f"sample_submission.csv:{n}")
                        | {"ecg_id": ptbxl_id(Path(rid).stem), "submission_id": rid})
    for rel, path in index.by_rel.items():
        if str(path) not in used and not rel.startswith(("test", "sample")):
            problems.append(("unlabeled_image", rel, "image with no row in the labels CSV; not used"))
    return rows, problems
