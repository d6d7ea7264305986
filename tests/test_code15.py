"""CODE-15%: exams.csv and HDF5 parts written here, read part by part, labels mapped, padding cut, rendered."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

h5py = pytest.importorskip("h5py")

from utils.data.sources import load_synth  # noqa: E402
from utils.synth.__main__ import main as synth_main  # noqa: E402
from utils.synth.code15_source import exam_labels, label_counts, list_exams, load_code15  # noqa: E402
from utils.synth.wfdb_source import RecordError  # noqa: E402
from utils.train.stages import stage1_kind  # noqa: E402

FS = 400


def tracing(seconds: float, pad_before: int, amplitude: float = 1.0) -> np.ndarray:
    """(4096, 12) zero-padded like CODE-15%: a 5 Hz cosine per lead, lead j scaled by (j + 1) / 12."""
    n = int(seconds * FS)
    t = np.arange(n) / FS
    sig = amplitude * np.cos(2 * np.pi * 5 * t)[:, None] * (np.arange(1, 13) / 12)[None]  # no all-zero sample
    out = np.zeros((4096, 12), np.float32)
    out[pad_before:pad_before + n] = sig
    return out


def write_part(path, ids, tracings):
    with h5py.File(path, "w") as f:
        f.create_dataset("exam_id", data=np.asarray(ids, np.int64))
        f.create_dataset("tracings", data=np.stack(tracings).astype(np.float32), chunks=(1, 4096, 12))


@pytest.fixture
def code15(tmp_path):
    root = tmp_path / "code15"
    root.mkdir()
    write_part(root / "exams_part0.hdf5", [11, 12, 13], [tracing(10, 48), tracing(7.3, 300), tracing(9, 0)])
    write_part(root / "exams_part1.hdf5", [21, 0, 22, 99], [tracing(8, 800), np.zeros((4096, 12)),
                                                            tracing(10.2, 8), tracing(6, 10)])
    (root / "exams_part2.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"cut download" * 50)  # a corrupt part
    rows = [  # exam_id, patient, 1dAVb, RBBB, LBBB, SB, ST, AF, normal_ecg, trace_file
        (11, 501, False, False, False, False, False, True, False, "exams_part0.hdf5"),   # AF
        (12, 502, False, True, False, False, False, False, False, "exams_part0.hdf5"),   # RBBB -> CD
        (13, 502, False, False, False, False, False, False, True, "exams_part0.hdf5"),   # normal
        (21, 503, False, False, False, True, False, False, False, "exams_part1.hdf5"),   # SB only: nothing known
        (22, 504, True, False, False, False, False, False, False, "exams_part1.hdf5"),   # 1dAVb -> CD
        (23, 505, False, False, True, False, False, False, False, "exams_part1.hdf5"),   # listed, not in its part
        (31, 506, False, False, False, False, False, True, False, "exams_part2.hdf5"),   # in the corrupt part
    ]
    cols = ["exam_id", "patient_id", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF", "normal_ecg", "trace_file"]
    pd.DataFrame(rows, columns=cols).assign(age=60, is_male=True).to_csv(root / "exams.csv", index=False)
    return root


def test_exams_are_listed_part_by_part_with_mapped_labels_and_patients(code15):
    refs, problems = list_exams(code15)
    by_id = {r.id: r for r in refs}
    assert sorted(by_id) == ["code15_11", "code15_12", "code15_13", "code15_21", "code15_22"]  # no filler, no 99
    assert by_id["code15_11"].labels == {"MI": None, "AF": 1, "HYP": None, "CD": None, "STTC": None}
    assert by_id["code15_12"].labels == {"MI": None, "AF": 0, "HYP": None, "CD": 1, "STTC": None}
    assert by_id["code15_13"].labels == {"MI": 0, "AF": 0, "HYP": 0, "CD": 0, "STTC": 0}
    assert by_id["code15_21"].labels == {"MI": None, "AF": 0, "HYP": None, "CD": None, "STTC": None}
    assert by_id["code15_22"].labels["CD"] == 1
    assert (by_id["code15_12"].group, by_id["code15_13"].group) == ("c502", "c502")  # one patient, one group
    assert (by_id["code15_22"].path.name, by_id["code15_22"].index) == ("exams_part1.hdf5", 2)
    why = dict(problems)
    assert why["exams_part2.hdf5"].startswith("unreadable, skipped")  # the corrupt part, named
    assert "exam 99 has no row in exams.csv" in why["exams_part1.hdf5:3"]
    assert why["code15_23"] == "listed in exams_part1.hdf5 but not found there"
    assert "code15_31" not in why  # its part could not be read: already listed once
    counts = label_counts(refs).set_index("label")
    assert counts.loc["AF"].tolist() == [1, 4, 0] and counts.loc["CD"].tolist() == [2, 1, 2]
    assert counts.loc["MI"].tolist() == [0, 1, 4]


def test_padding_is_cut_and_the_signal_resampled(code15):
    refs = {r.id: r for r in list_exams(code15)[0]}
    native = load_code15(refs["code15_12"], fs=FS, duration=10)  # 7.3 s after 300 samples of padding
    n = int(7.3 * FS)
    np.testing.assert_allclose(native[:, :n].T, tracing(7.3, 0)[:n], atol=1e-6)
    assert np.isnan(native[:, n:]).all() and native.shape == (12, 4000)
    at500 = load_code15(refs["code15_12"], fs=500, duration=10)
    assert np.isfinite(at500).all(0).sum() == pytest.approx(n * 500 / FS, abs=1)
    peak = np.nanmax(np.abs(at500[:, 500:3000]), axis=1)  # away from the edges, where resampling rings
    assert peak[-1] == pytest.approx(1.0, abs=0.02) and peak[0] == pytest.approx(1 / 12, abs=0.01)  # mV kept


def test_an_exam_of_padding_only_is_a_record_error(code15, tmp_path):
    from utils.synth.wfdb_source import RecordRef

    ref = RecordRef("code15_0", code15 / "exams_part1.hdf5", {}, "", "code15", index=1)
    with pytest.raises(RecordError, match="all zeros"):
        load_code15(ref)


def test_labels_of_a_row():
    row = {"AF": "True", "1dAVb": "False", "RBBB": "False", "LBBB": "False", "normal_ecg": "True"}
    assert exam_labels(row)["AF"] == 1 and exam_labels(row)["MI"] is None  # a flagged exam is not "normal"


def test_rendered_exams_keep_labels_known_mask_and_patients(code15, tmp_path, capsys):
    out = tmp_path / "renders"
    assert synth_main(["--out", str(out), "--style", "scan", "--from-code15", str(code15), "--limit", "4",
                       "--page-width", "440", "--page-height", "340", "--workers", "1"]) == 0
    assert "exams_part2.hdf5: unreadable" in capsys.readouterr().err
    made = pd.read_csv(out / "train.csv", dtype={"id": str}).set_index("id")
    assert list(made.index) == ["code15_11", "code15_12", "code15_13", "code15_21"]
    assert made.loc["code15_11", "AF"] == 1 and np.isnan(made.loc["code15_11", "MI"])
    assert made.loc["code15_13"].tolist() == [0, 0, 0, 0, 0]
    ann = json.loads((out / "annotations" / "code15_12.json").read_text())
    assert (ann["source"], ann["group"]) == ("code15", "c502")
    rows, problems = load_synth(out)
    assert not problems and {r["source"] for r in rows} == {"code15"}
    assert set(stage1_kind(pd.Series([r["source"] for r in rows]))) == {"recorded"}
    af = {r["id"]: r["AF"] for r in rows}
    assert af["code15:code15_11"] == 1 and af["code15:code15_12"] == 0
    assert synth_main(["--out", str(tmp_path / "x"), "--from-code15", str(tmp_path / "nowhere")]) == 2


def test_step00_renders_code15_for_stage1_as_recorded_waveforms(code15, tmp_path):
    from utils.core.paths import resolve_paths
    from utils.data.assemble import collect_rows
    from utils.core.config import resolve_config
    from utils.synth.sets import synthesize_sets

    cfg = resolve_config("smoke", {"working_root": str(tmp_path / "work"), "synth_from_code15": str(code15),
                                   "synth_scan_train": 3, "synth_photo_train": 4, "synth_photo_test": 0})
    paths = resolve_paths(cfg)
    sets = synthesize_sets(cfg, paths, progress=False)
    assert sets["scan"]["made"] == 3 and any("exams_part2.hdf5" in p for p in sets["scan"]["record_problems"])
    rows = collect_rows(cfg, paths, {k: v["folder"] for k, v in sets.items()})[0]
    stage1 = [r for r in rows if r["stage"] == "I"]
    assert {r["source"] for r in stage1} == {"code15"} and {r["group"] for r in stage1} == {"c501", "c502"}
    with pytest.raises(ValueError, match="choose one source"):
        synthesize_sets(resolve_config("smoke", {**cfg, "synth_from_wfdb": str(code15), "profile": "smoke"}), paths)


def test_a_malformed_exams_table_is_an_error_naming_file_and_row(code15, tmp_path):
    table = pd.read_csv(code15 / "exams.csv")
    table.drop(columns=["AF"]).to_csv(code15 / "exams.csv", index=False)
    with pytest.raises(ValueError, match=r"exams\.csv: no column\(s\) \['AF'\]"):
        list_exams(code15)
    table.astype({"exam_id": object}).assign(exam_id=["11", "12", "x13", "21", "22", "23", "31"]).to_csv(
        code15 / "exams.csv", index=False)
    with pytest.raises(ValueError, match=r"exams\.csv: row 4 has exam_id 'x13', not a number"):
        list_exams(code15)
    (code15 / "exams.csv").unlink()
    with pytest.raises(FileNotFoundError, match="CODE-15%: no exams.csv in"):
        list_exams(code15)
    (tmp_path / "no-parts").mkdir()
    table.to_csv(tmp_path / "no-parts" / "exams.csv", index=False)
    with pytest.raises(FileNotFoundError, match=r"no exams_part\*\.hdf5 under"):
        list_exams(tmp_path / "no-parts")
