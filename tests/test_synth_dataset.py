"""Dataset writer: competition layout, determinism across workers and shards, resume, bad WFDB input."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from utils.synth.__main__ import main as synth_main
from utils.synth.dataset import DatasetError, generate_dataset
from utils.synth.generate import SynthSettings
from utils.synth.waveform import LEADS, simulate
from utils.synth.wfdb_source import list_records

TINY = SynthSettings(style="photo", page_width=440, page_height=340, photo_max_side=520)


def _hashes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".jpg", ".json", ".csv")
            and p.name != "synth.json"}


def test_competition_layout(tmp_path):
    s = generate_dataset(tmp_path / "d", TINY, n_train=6, n_test=3, workers=1, progress=False)
    d = tmp_path / "d"
    assert s["made"] == 9 and s["train_rows"] == 6 and s["test_rows"] == 3
    train = pd.read_csv(d / "train.csv", dtype={"id": str})
    assert list(train.columns) == ["id", "MI", "AF", "HYP", "CD", "STTC"]
    assert all((d / "train" / f"{i}.jpg").is_file() for i in train["id"])
    sub = pd.read_csv(d / "sample_submission.csv", dtype={"id": str})
    truth = pd.read_csv(d / "test_labels.csv", dtype={"id": str})
    assert list(sub["id"]) == list(truth["id"]) and not set(sub["id"]) & set(train["id"])
    assert all((d / "test" / f"{i}.jpg").is_file() for i in sub["id"])
    ann = json.loads((d / "annotations" / f"{train['id'][0]}.json").read_text())
    assert ann["split"] == "train" and ann["labels"] == train.iloc[0][["MI", "AF", "HYP", "CD", "STTC"]].to_dict()


@pytest.mark.slow
def test_same_bytes_whatever_the_workers_and_shards(tmp_path):
    generate_dataset(tmp_path / "one", TINY, n_train=8, n_test=2, workers=1, progress=False)
    generate_dataset(tmp_path / "two", TINY, n_train=8, n_test=2, workers=2, progress=False)
    for i in range(3):
        generate_dataset(tmp_path / "shards", TINY, n_train=8, n_test=2, workers=1, shard=(i, 3), progress=False)
    assert not (tmp_path / "shards" / "train.csv").exists()  # a lone shard does not write the tables
    whole = generate_dataset(tmp_path / "shards", TINY, n_train=8, n_test=2, workers=1, progress=False)
    assert whole["made"] == 0 and whole["skipped_existing"] == 10
    assert _hashes(tmp_path / "one") == _hashes(tmp_path / "two") == _hashes(tmp_path / "shards")


def test_resume_makes_only_what_is_missing(tmp_path):
    d = tmp_path / "d"
    generate_dataset(d, TINY, n_train=5, workers=1, progress=False)
    before = _hashes(d)
    (d / "annotations" / "000003.json").unlink()  # as if killed before this sample finished
    again = generate_dataset(d, TINY, n_train=5, workers=1, progress=False)
    assert again["made"] == 1 and again["skipped_existing"] == 4
    assert _hashes(d) == before


def test_other_settings_never_overwrite(tmp_path):
    d = tmp_path / "d"
    generate_dataset(d, TINY, n_train=2, workers=1, progress=False)
    before = _hashes(d)
    with pytest.raises(DatasetError, match=r"other settings \(settings\)"):
        generate_dataset(d, SynthSettings(style="scan", page_width=440, page_height=340), n_train=2, workers=1,
                         progress=False)
    with pytest.raises(DatasetError, match=r"other settings \(n_train\)"):
        generate_dataset(d, TINY, n_train=3, workers=1, progress=False)
    assert _hashes(d) == before


def _write_record(folder: Path, name: str, sig: np.ndarray, leads=LEADS, fs=500):
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig.T.astype(np.float64),
                fmt=["16"] * len(leads), write_dir=str(folder))


def test_bad_wfdb_records_are_listed_not_fatal(tmp_path, capsys):
    src = tmp_path / "wfdb"
    src.mkdir()
    good = simulate({"AF": 1}, np.random.default_rng(0)).signals
    _write_record(src, "good", good)
    _write_record(src, "noV6", good[:11], leads=LEADS[:11])
    short = good[:, :600]
    _write_record(src, "short", short)
    (src / "broken.hea").write_text("broken 12 500 5000\nthis is not a signal line\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,MI,AF,HYP,CD,STTC\ngood,0,1,0,0,\nnoV6,0,0,0,0,0\nshort,1,0,0,0,0\n")
    rc = synth_main(["--out", str(tmp_path / "out"), "--style", "scan", "--from-wfdb", str(src), "--labels-csv",
                     str(labels), "--page-width", "440", "--page-height", "340", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 0 and "record broken: no row in" in err and "3 record(s) could not be rendered" in err
    failures = pd.read_csv(tmp_path / "out" / "failures.csv").set_index("id")["reason"].to_dict()
    assert set(failures) == {"noV6", "short", "broken"}
    assert "missing leads ['V6']" in failures["noV6"] and "at least 2.5 s" in failures["short"]
    assert failures["broken"].startswith("unreadable")
    train = pd.read_csv(tmp_path / "out" / "train.csv", dtype={"id": str})
    assert train["id"].tolist() == ["good"] and train["AF"][0] == 1 and np.isnan(train["STTC"][0])


def test_wfdb_nan_samples_are_reported(tmp_path):
    from utils.synth.wfdb_source import RecordError, RecordRef, load_signals

    sig = simulate({}, np.random.default_rng(1)).signals.astype(np.float64)
    _write_record(tmp_path, "gap", sig)
    rec = wfdb.rdrecord(str(tmp_path / "gap"))
    rec.p_signal[100:200, 4] = np.nan
    wfdb.wrsamp("gapnan", fs=500, units=["mV"] * 12, sig_name=list(LEADS), p_signal=rec.p_signal, fmt=["16"] * 12,
                write_dir=str(tmp_path))
    with pytest.raises(RecordError, match=r"NaN samples in leads \['aVL'\]"):
        load_signals(RecordRef("gapnan", tmp_path / "gapnan"))


def test_ptbxl_layout_labels_and_unknown_codes(tmp_path):
    root = tmp_path / "ptbxl"
    (root / "records500" / "00000").mkdir(parents=True)
    sig = simulate({}, np.random.default_rng(2)).signals
    _write_record(root / "records500" / "00000", "00001_hr", sig)
    _write_record(root / "records500" / "00000", "00002_hr", sig)
    pd.DataFrame({"ecg_id": [1, 2], "patient_id": [10.0, 11.0],
                  "scp_codes": ["{'IMI': 100.0, 'AFIB': 0.0}", "{'NORM': 100.0, 'XYZ': 50.0}"],
                  "filename_hr": ["records500/00000/00001_hr", "records500/00000/00002_hr"]}).to_csv(
        root / "ptbxl_database.csv", index=False)
    pd.DataFrame({"code": ["IMI", "NORM", "AFIB"], "diagnostic": [1.0, 1.0, None],
                  "diagnostic_class": ["MI", "NORM", None]}).to_csv(root / "scp_statements.csv", index=False)
    refs, problems = list_records(root)
    assert [r.id for r in refs] == ["ptbxl00001", "ptbxl00002"]
    assert refs[0].labels == {"MI": 1, "HYP": 0, "CD": 0, "STTC": 0, "AF": 1} and refs[0].group == "p10"
    assert problems == [("2", "unknown scp codes ['XYZ'] (ignored; other codes still used)")]


def test_cli_rejects_unknown_layout(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path / "x"), "--layouts", "3x4,5x5"]) == 2
    assert "unknown layout(s) ['5x5']" in capsys.readouterr().err


@pytest.mark.shared_data
def test_real_ptbxl_records_render(tmp_path, shared_data):
    refs, _ = list_records(shared_data / "ptbxl-dev")
    assert len(refs) == 143 and sum(r.labels["MI"] for r in refs) == 19
    s = generate_dataset(tmp_path / "r", SynthSettings(style="scan", page_width=440, page_height=340),
                         refs=refs[:3], workers=1, progress=False)
    assert s["made"] == 3 and s["failed"] == 0
