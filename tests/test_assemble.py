"""Step 01: sources in their own layouts, data checks as a report, folds, and the leakage guard."""
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.core.labels import LABELS as THE_LABELS
from utils.core.paths import resolve_paths
from utils.data.assemble import build_manifest, discover_scan_sets
from utils.data.folds import make_folds
from utils.data.sources import class_labels, load_class_folders, load_competition
from utils.core.config import resolve_config

LABELS = list(THE_LABELS)  # a list: pandas reads a tuple as one key


def _img(path: Path, seed: int, size=(320, 400)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return path


@pytest.fixture
def competition(tmp_path):
    root = tmp_path / "input" / "bhf-ecg"
    for i in range(1, 9):
        _img(root / "train" / f"{i:05d}_hr_1R.png", i)
    shutil.copy(root / "train" / "00001_hr_1R.png", root / "train" / "00008_hr_1R.png")  # exact duplicate
    (root / "train" / "00007_hr_1R.png").write_bytes((root / "train" / "00007_hr_1R.png").read_bytes()[:300])
    _img(root / "train" / "00099_hr_1R.png", 99)  # an image without a label row
    _img(root / "test" / "00050_hr_1R.png", 50)
    _img(root / "test" / "00051_hr_1R.png", 51)
    (root.parent / "secret.png").write_bytes((root / "train" / "00002_hr_1R.png").read_bytes())
    # label columns in another order and case; ids with and without extension; one unknown value; one missing
    # image; one duplicate id; one path escaping the root
    (root / "train.csv").write_text(
        "Sttc,ID,mi,Af,hyp,cd\n"
        "0,00001_hr_1R,1,0,0,0\n0,00002_hr_1R.png,0,1,0,0\n1,00003_hr_1R,0,0,1,0\n0,00004_hr_1R,0,0,0,1\n"
        "1,00005_hr_1R,1,0,0,1\n0,00006_hr_1R,,0,0,0\n0,00007_hr_1R,0,0,0,0\n0,00008_hr_1R,1,0,0,0\n"
        "0,00009_hr_1R,0,0,0,0\n0,00001_hr_1R,0,0,0,0\n0,../secret.png,0,0,0,0\n")
    (root / "sample_submission.csv").write_text("ID,MI,AF,HYP,CD,STTC\n00051_hr_1R,0,0,0,0,0\n"
                                                "00050_hr_1R,0,0,0,0,0\n00052_hr_1R,0,0,0,0,0\n")
    return root


@pytest.fixture
def khan(tmp_path):
    root = tmp_path / "input" / "ecg-images-khan" / "ECG Images dataset"
    classes = ["ECG Images of Myocardial Infarction Patients (240x12=2880)",
               "ECG Images of Patient that have History of MI (172x12=2064)",
               "ECG Images of Patient that have abnormal heartbeat (233x12=2796)",
               "Normal Person ECG Images (284x12=3408)", "ECG Images of COVID-19 Patients", "Misc"]
    for c, name in enumerate(classes):
        for i in range(3):
            _img(root / name / f"{name[:6]}({i}).jpg", 100 + 10 * c + i)
    return root


def test_class_folder_mapping_is_documented_and_partial():
    assert class_labels("ECG Images of Myocardial Infarction Patients") == {"MI": 1, **dict.fromkeys(LABELS[1:])}
    assert class_labels("Patient that have History of MI")["MI"] == 1
    abnormal = class_labels("ECG Images of Patient that have abnormal heartbeat")
    assert abnormal["MI"] == 0 and abnormal["AF"] is None and abnormal["CD"] is None
    assert class_labels("Normal Person ECG Images") == dict.fromkeys(LABELS, 0)
    assert all(v is None for v in class_labels("COVID-19 Patients").values())
    assert class_labels("Misc") is None


def test_competition_loader_discovers_columns_and_reports_problems(competition):
    rows, problems = load_competition(competition)
    by_id = {r["id"]: r for r in rows}
    assert by_id["competition:00005_hr_1R"]["CD"] == 1 and by_id["competition:00005_hr_1R"]["STTC"] == 1
    assert by_id["competition:00002_hr_1R"]["AF"] == 1  # id given with its extension
    assert by_id["competition:00006_hr_1R"]["MI"] is None  # empty: unknown
    assert by_id["competition:00001_hr_1R"]["group"] == "ecg:1"
    kinds = {(k, w.split(" ")[0]) for k, w, _ in problems}
    assert ("missing_image", "train.csv:10") in kinds
    assert ("duplicate_id", "train.csv:11") in kinds
    assert ("outside_root", "train.csv:12") in kinds
    assert ("unlabeled_image", "train/00099_hr_1R.png") in kinds
    assert ("missing_image", "sample_submission.csv:4") in kinds
    test = [r for r in rows if r["split"] == "test"]
    assert [r["submission_id"] for r in test] == ["00051_hr_1R", "00050_hr_1R"]  # the submission's order


def test_competition_without_labels_csv_is_a_clear_error(tmp_path):
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FileNotFoundError, match=r"no labels CSV .*train.csv: .*no column for \['MI'"):
        load_competition(tmp_path)


@pytest.mark.parametrize("table", ["train.csv", "sample_submission.csv"])
def test_a_byte_that_is_not_utf8_is_named_with_its_file_and_line(competition, table):
    """A table saved in Latin-1 or cp1252 (a patient's name, a degree sign): the file, the byte and its line, never a
    bare UnicodeDecodeError."""
    csv = competition / table
    lines = csv.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"_hr_1R", b"_hr_1\xe9")  # a Latin-1 e-acute on line 3
    csv.write_bytes(b"\n".join(lines))
    offset = len(b"\n".join(lines[:2])) + 1 + lines[2].index(b"\xe9")
    with pytest.raises((FileNotFoundError, ValueError), match=rf"{table}: byte 0xe9 at offset {offset} \(line 3\) is "
                                                              r"not UTF-8; save the table as UTF-8"):
        load_competition(competition)


def test_class_folders_loader(khan):
    rows, problems = load_class_folders(khan, "khan")
    assert len(rows) == 15 and problems[0][0] == "unknown_class" and problems[0][1].endswith("Misc")
    mi = [r for r in rows if "Myocardial" in r["provenance"]]
    assert all(r["MI"] == 1 and r["AF"] is None and r["style"] == "scan" for r in mi)


def test_manifest_report_and_folds(competition, khan, tmp_path):
    cfg = resolve_config("smoke", {"input_root": str(tmp_path / "input"), "working_root": str(tmp_path / "w"),
                                   "target": "competition", "n_folds": 2, "min_image_side": 100,
                                   "stage1_scan_dirs": "auto"})
    paths = resolve_paths(cfg)
    assert discover_scan_sets(paths, competition) == [khan]
    step_dir = tmp_path / "step"
    step_dir.mkdir()
    out = build_manifest(cfg, paths, {}, step_dir, progress=False)
    m, report = out["manifest"], out["report"]
    kinds = report.groupby("kind").size().to_dict()
    assert kinds["unreadable"] == 1 and kinds["duplicate"] == 1 and kinds["no_known_label"] == 3
    assert "truncated PNG" in report[report.kind == "unreadable"]["detail"].iloc[0]
    train = m[(m.stage == "II") & (m.split == "train")]
    assert sorted(train["id"].str[-11:-6]) == ["00001", "00002", "00003", "00004", "00005", "00006"]
    assert train["fold"].notna().all() and set(train["fold"]) == {0, 1}
    assert m.loc[m.id == "competition:00006_hr_1R", "known_MI"].item() == 0
    assert (m[m.stage == "I"]["split"].isin(["stage1", "stage1_val"])).all()
    assert len(m[m.split == "test"]) == 2
    for name in ("manifest.csv", "folds.csv", "report.csv", "summary.csv", "fold_prevalence.csv", "sources.json"):
        assert (step_dir / name).is_file()
    # a re-run reuses the fold file and the image-check cache
    again = build_manifest(cfg, paths, {}, step_dir, progress=False)
    assert again["manifest"]["fold"].tolist() == m["fold"].tolist()


def _ptbxl_renders(root: Path, ecg_ids) -> Path:
    """A folder as `utils.synth --from-wfdb` writes it for PTB-XL records."""
    import json

    lines = ["id,MI,AF,HYP,CD,STTC"]
    for n in ecg_ids:
        rid = f"ptbxl{n:05d}"
        _img(root / "train" / f"{rid}.jpg", 500 + n)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{rid}.json").write_text(json.dumps(
            {"source": "ptbxl", "image": f"train/{rid}.jpg", "group": f"p{n}"}))
        lines.append(f"{rid},1,0,0,0,0")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_leakage_guard_refuses_ptbxl_renders_of_target_ecgs(competition, tmp_path):
    render = _ptbxl_renders(tmp_path / "renders", [1, 3, 400])
    base = {"input_root": str(tmp_path / "input"), "target": "competition", "stage1_scan_dirs": "",
            "stage1_render_dirs": str(render), "n_folds": 2, "min_image_side": 100}
    step_dir = tmp_path / "s"
    step_dir.mkdir()
    cfg = resolve_config("smoke", base)
    with pytest.raises(ValueError, match=r"leakage: 2 Stage I rows are renders of 2 PTB-XL ECGs"):
        build_manifest(cfg, resolve_paths(cfg), {}, step_dir, progress=False)
    cfg = resolve_config("smoke", {**base, "allow_ptbxl_overlap": True})
    out = build_manifest(cfg, resolve_paths(cfg), {}, step_dir, progress=False)
    assert out["leakage"] == {"ptbxl_stage1_rows": 3, "overlapping_rows": 2, "overlapping_ecg_ids": 2}


def test_folds_are_stratified_grouped_and_seeded():
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame(rng.random((n, 5)) < [0.25, 0.07, 0.12, 0.21, 0.24], columns=LABELS).astype(float)
    df["group"] = [f"p{i // 2}" for i in range(n)]  # two ECGs per patient
    df.loc[5, "AF"] = np.nan
    folds = make_folds(df, 5, seed=1)
    assert (folds == make_folds(df, 5, seed=1)).all() and not (folds == make_folds(df, 5, seed=2)).all()
    assert df.assign(f=folds).groupby("group")["f"].nunique().max() == 1
    for k in LABELS:
        prev = df[k].fillna(0).groupby(folds).mean()
        assert (prev - df[k].fillna(0).mean()).abs().max() < 0.03, k
    with pytest.raises(ValueError, match="only 3 groups for 5 folds"):
        make_folds(df.head(6), 5)


def test_stage1_validation_holds_out_part_of_every_source():
    from utils.data.folds import split_stage1_validation

    df = pd.DataFrame({"source": ["synth_scan"] * 40 + ["ptbxl"] * 6 + ["scans:x"],
                       "group": [f"s{i}" for i in range(40)] + ["p1", "p1", "p2", "p3", "p4", "p5"] + ["one"]})
    split = split_stage1_validation(df, 0.1, seed=3)
    val = df[split == "stage1_val"]
    assert (val["source"] == "synth_scan").sum() == 4  # 10% of 40 groups
    assert val.loc[val["source"] == "ptbxl", "group"].nunique() == 1  # rounds to 0: one group of five all the same
    assert split[df["group"] == "one"].tolist() == ["stage1"]  # a source of one group keeps it for training
    assert split[df["group"] == "p1"].nunique() == 1  # a group is never split
    assert split.equals(split_stage1_validation(df, 0.1, seed=3))
    assert (split_stage1_validation(df, 0.0, seed=3) == "stage1").all()


@pytest.mark.parametrize("value", ["2", "0.5", "yes", "-1"])
def test_every_label_table_refuses_a_value_other_than_0_1_or_empty(competition, value, tmp_path):
    from utils.core.labels import LabelTableError
    from utils.data.sources import load_synth
    from utils.synth.wfdb_source import list_records

    csv = competition / "train.csv"
    csv.write_text(csv.read_text().replace("0,00004_hr_1R,0,0,0,1", f"0,00004_hr_1R,0,0,{value},1"))
    with pytest.raises(LabelTableError, match=rf"train.csv, line 5, column hyp: '{re.escape(value)}' is not a label "
                                              r"value \(0, 1 or empty\)"):
        load_competition(competition)
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "train.csv").write_text(f"id,MI,AF,HYP,CD,STTC\nsynth00001,0,{value},0,0,0\n")
    with pytest.raises(LabelTableError, match=r"synth/train.csv, line 2, column AF"):
        load_synth(tmp_path / "synth")
    (tmp_path / "wfdb").mkdir()
    (tmp_path / "wfdb" / "r1.hea").write_text("r1 12 500 5000\n")
    (tmp_path / "labels.csv").write_text(f"record,MI,AF,HYP,CD,STTC\nr1,0,0,0,{value},0\n")
    with pytest.raises(LabelTableError, match=r"labels.csv, line 2, column CD"):
        list_records(tmp_path / "wfdb", tmp_path / "labels.csv")


def test_label_tables_keep_ids_as_written_and_report_duplicates(tmp_path):
    from utils.core.labels import read_label_table
    from utils.synth.wfdb_source import list_records

    (tmp_path / "wfdb").mkdir()
    for rid in ("00001", "00002"):
        (tmp_path / "wfdb" / f"{rid}.hea").write_text(f"{rid} 12 500 5000\n")
    (tmp_path / "labels.csv").write_text("id,MI,AF,HYP,CD,STTC\n00001,1,0,,0,0\n00002,0,1,0,0,0\n"
                                         "00001,0,0,0,0,0\n00002,0,1.0,0,0,0\n")
    table, problems = read_label_table(tmp_path / "labels.csv")
    assert list(table["id"]) == ["00001", "00002"] and table.loc[0, "HYP"] is None and table.loc[0, "MI"] == 1
    assert problems == [("duplicate_id", "labels.csv:4 (id 00001)", "id seen on line 2 with other labels; the first "
                                                                    "row kept"),
                        ("duplicate_id", "labels.csv:5 (id 00002)", "id seen on line 3 with the same labels; the "
                                                                    "first row kept")]
    refs, notes = list_records(tmp_path / "wfdb", tmp_path / "labels.csv")
    assert {r.id: r.labels["MI"] for r in refs} == {"00001": 1, "00002": 0}  # '00001' is not read as 1
    assert len(notes) == 2 and "other labels" in notes[0][1]
