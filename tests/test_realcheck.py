"""The real-ECG check: PTB-XL-layout folders rendered as photos, scored by a package, AUROC with intervals."""
import pandas as pd
import pytest

from tests.conftest import ptbxl_subset
from utils.core.labels import LABELS as THE_LABELS
from utils.ensemble.realcheck import main as realcheck_main
from utils.ensemble.realcheck import present_folders, real_check
from utils.synth.wfdb_source import list_records

LABELS = list(THE_LABELS)  # a list: pandas reads a tuple as one key


def test_subset_layout_is_read_with_its_labels(tmp_path):
    refs, problems = list_records(ptbxl_subset(tmp_path / "sub"))
    assert problems == [] and [r.id for r in refs][:2] == ["ptbxl00001", "ptbxl00002"]
    by_id = {r.id: r.labels for r in refs}
    assert by_id["ptbxl00005"] == {"MI": 1, "HYP": 0, "CD": 1, "STTC": 0, "AF": 0}
    assert by_id["ptbxl00003"]["AF"] == 1 and by_id["ptbxl00003"]["STTC"] == 1
    assert refs[0].group == "p100" and refs[0].path.name == "00001_lr"


def test_real_check_renders_scores_and_tabulates(tmp_path, package):
    data = ptbxl_subset(tmp_path / "ptbxl-sub")
    out = tmp_path / "check"
    table, notes = real_check(package, f"{data},{tmp_path / 'absent'}", out, page=(440, 340), photo_max_side=640,
                              n_boot=20)
    assert notes == [f"{tmp_path / 'absent'}: not found, skipped"]
    assert table["label"].tolist() == [*LABELS, "macro"]
    pos = table.set_index("label")["positives"]
    assert pos["MI"] == 2 and pos["AF"] == 1 and pos["HYP"] == 1 and pos["CD"] == 1 and pos["macro"] == 6
    auc = table.set_index("label")["auroc"]
    assert auc.between(0, 1).all()
    preds = pd.read_csv(out / "real_predictions.csv", dtype={"id": str})
    assert len(preds) == 6 and (preds["error"].fillna("") == "").all()
    assert preds[[f"p_{k}" for k in LABELS]].apply(lambda c: c.between(0, 1)).all().all()
    renders = list(out.glob("render-ptbxl-sub-*/train/*.jpg"))
    assert len(renders) == 6
    before = {p: p.stat().st_mtime_ns for p in renders}
    real_check(package, str(data), out, page=(440, 340), photo_max_side=640, n_boot=20)  # renders are reused
    assert {p: p.stat().st_mtime_ns for p in renders} == before


def test_real_check_sets_the_three_readers_side_by_side(tmp_path, signal_package):
    data = ptbxl_subset(tmp_path / "ptbxl-sub")
    out = tmp_path / "check"
    table, notes = real_check(signal_package, str(data), out, page=(880, 680), photo_max_side=1000, n_boot=20,
                              table_copy=tmp_path / "step" / "real_auroc.csv")
    readers = pd.read_csv(out / "real_readers.csv")
    assert readers["reader"].tolist() == ["image model", "signal reader", "ensemble"]
    assert list(readers.columns) == ["reader", "macro", *LABELS]
    assert (tmp_path / "step" / "real_readers.csv").read_text() == (out / "real_readers.csv").read_text()
    assert any(n.startswith("the three readers on these records") for n in notes)
    preds = pd.read_csv(out / "real_predictions.csv", dtype={"id": str})
    for prefix in ("p_", "image_p_"):
        assert preds[[f"{prefix}{k}" for k in LABELS]].apply(lambda c: c.between(0, 1)).all().all()
    signal = preds[[f"signal_p_{k}" for k in LABELS]]
    read = preds["digitised"].str.startswith("3x4")
    assert read.sum() >= 3, preds["digitised"].tolist()  # most of these photos are digitised
    assert signal[read].notna().all().all() and signal[~read].isna().all().all()
    # the ensemble is the image model where a picture was not read, and between the two readers where it was
    assert (preds.loc[~read, "p_MI"] - preds.loc[~read, "image_p_MI"]).abs().max() < 1e-6 if (~read).any() else True
    lo = preds[["image_p_MI", "signal_p_MI"]].min(axis=1)
    hi = preds[["image_p_MI", "signal_p_MI"]].max(axis=1)
    assert ((preds["p_MI"] >= lo - 1e-6) & (preds["p_MI"] <= hi + 1e-6))[read].all()


def test_real_check_without_data_says_so(tmp_path, package, capsys):
    found, notes = present_folders(f"{tmp_path / 'nope'},relative/nowhere")
    assert found == [] and notes[1] == "relative/nowhere: not found, skipped"
    rc = realcheck_main(["--model", str(package), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0 and "the real-ECG check is skipped" in out and not (tmp_path / "o").exists()
    assert realcheck_main(["--model", str(tmp_path / "missing.pt"), "--data", "x"]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a package")
    here = ptbxl_subset(tmp_path / "one", n=1)
    assert realcheck_main(["--model", str(junk), "--data", str(here), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "not an ensemble package" in err and "Traceback" not in err


@pytest.mark.shared_data
def test_ptbxl_more_labels_match_its_readme(shared_data):
    refs, problems = list_records(shared_data / "ptbxl-more")
    assert len(refs) == 771 and problems == []
    counts = {k: sum(r.labels[k] for r in refs) for k in LABELS}
    assert counts == {"MI": 155, "AF": 46, "HYP": 93, "CD": 168, "STTC": 205}
