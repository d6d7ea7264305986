"""The sim-to-real benchmark on signals: preparation, real folders read with their problems listed, and the table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.core.labels import LABELS
from utils.synth.realism import FS, SECONDS, main, prepare, real_set, simulated_set


def test_prepare_resamples_removes_wander_and_blanks():
    t = np.arange(5000) / 500
    x = np.tile(0.8 * np.sin(2 * np.pi * 0.1 * t) + 0.5 * np.sin(2 * np.pi * 10 * t), (12, 1))
    x[3, 100:200] = np.nan
    x[4] += 20.0 * np.sin(2 * np.pi * 10 * t)  # saturated
    out = prepare(x, 500)
    assert out.shape == (12, int(FS * SECONDS)) and out.dtype == np.float32 and np.isfinite(out).all()
    mid = out[0, 200:800]  # away from the edges: the 10 Hz wave is kept, the 0.1 Hz wander removed
    assert 0.45 < mid.max() < 0.6 and abs(mid.mean()) < 0.05
    assert np.abs(out[4]).max() == pytest.approx(5.0)
    assert prepare(x[:, :1500], 500)[0, 400:].max() == 0.0  # a short record is padded with zeros


def _write_folder(root, n=30, seed=3):
    """n records from the simulator written as 100 Hz WFDB files, a labels CSV, and one broken record."""
    import wfdb

    from utils.synth.labels import sample_labels
    from utils.synth.waveform import LEADS, simulate

    root.mkdir()
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        labels = sample_labels(rng, {"AF": 0.3, "CD": 0.3})
        sig = simulate(labels, rng, fs=100).signals.T.astype(np.float64)
        wfdb.wrsamp(f"r{i:03d}", fs=100, units=["mV"] * 12, sig_name=list(LEADS), p_signal=sig, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(root))
        rows.append({"id": f"r{i:03d}", **labels})
    (root / "broken.hea").write_text("broken 12 100 1000\n")
    rows.append({"id": "broken", **{k: 0 for k in LABELS}})
    pd.DataFrame(rows).to_csv(root.parent / "labels.csv", index=False)
    return pd.DataFrame(rows[:-1])


def test_real_folder_reads_labels_and_lists_unreadable_records(tmp_path):
    expected = _write_folder(tmp_path / "wfdb")
    data, problems = real_set(tmp_path / "wfdb", tmp_path / "labels.csv")
    assert data.x.shape == (30, 12, 1000) and data.name == "wfdb"
    assert np.array_equal(data.y, expected[list(LABELS)].to_numpy(float))
    assert [p[0] for p in problems] == ["broken"] and "unreadable" in problems[0][1]


def test_simulated_set_is_seeded():
    a, b = simulated_set(5, 1), simulated_set(5, 1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, simulated_set(5, 2).x)


def test_benchmark_writes_each_pairing_per_label(tmp_path, capsys):
    expected = _write_folder(tmp_path / "wfdb")
    argv = ["--real", f"{tmp_path / 'wfdb'},{tmp_path / 'absent'}", "--labels", str(tmp_path / "labels.csv"),
            "--n-sim", "64", "--n-sim-test", "40", "--epochs", "1", "--bootstrap", "20", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "absent: not found, skipped" in printed and "problems listed" in printed
    res = pd.read_csv(tmp_path / "o" / "run" / "results.csv")
    pairs = set(zip(res["trained_on"], res["scored_on"]))
    assert pairs == {("simulated", "simulated (new)"), ("simulated", "wfdb"), ("wfdb (5-fold, by patient)", "wfdb")}
    assert set(res["label"]) == {"macro", *LABELS}
    on_real = res[res["scored_on"] == "wfdb"].set_index(["trained_on", "label"])
    assert (on_real["records"] == 30).all()
    for k in LABELS:
        assert on_real.loc[("simulated", k), "positives"] == expected[k].sum()
    ok = res.dropna(subset=["auroc"])
    assert ((ok["auroc"] >= 0) & (ok["auroc"] <= 1) & (ok["ci_low"] <= ok["auroc"]) & (ok["auroc"] <= ok["ci_high"])).all()
    assert (tmp_path / "o" / "run" / "problems.csv").read_text().count("broken") == 1
    assert main(argv + ["--no-cv"]) == 0  # a second run writes a new folder
    assert len(pd.read_csv(tmp_path / "o" / "run-2" / "results.csv")) == 2 * (len(LABELS) + 1)


def test_without_real_folders_only_sim_to_sim(tmp_path, capsys):
    argv = ["--real", str(tmp_path / "none"), "--n-sim", "32", "--n-sim-test", "24", "--epochs", "1",
            "--bootstrap", "10", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert "no real WFDB folder present: only sim -> sim is measured" in capsys.readouterr().out
    assert set(pd.read_csv(tmp_path / "o" / "run" / "results.csv")["scored_on"]) == {"simulated (new)"}
    assert main(argv[:-2] + ["--epochs", "0"]) == 2


def test_as_picture_keeps_one_lead_at_a_pictures_resolution(tmp_path, capsys):
    from utils.synth.realism import SignalSet, as_picture

    t = np.arange(1000) / FS
    x = np.zeros((2, 12, 1000), np.float32)
    x[:, 1] = 0.5 * np.sin(2 * np.pi * 0.5 * t)  # lead II: a slow wave; every other lead flat
    x[:, 7] = 1.0
    data = SignalSet("s", x, np.zeros((2, 5)), np.arange(2).astype(str))
    view = as_picture(data, "II", samples=100, px_per_mv=10.0)
    assert view.x.shape == x.shape and np.array_equal(view.y, data.y)
    assert all(np.array_equal(view.x[:, 1], view.x[:, k]) for k in range(12))  # lead II on every channel
    np.testing.assert_allclose(view.x * 10, np.round(view.x * 10), atol=1e-4)  # whole pixels of 0.1 mV
    assert len(np.unique(view.x[0, 0][:10])) == 1 and np.count_nonzero(np.diff(view.x[0, 0])) < 100  # held
    assert np.abs(view.x[0, 0] - x[0, 1]).max() <= 0.05 + 0.5 * 2 * np.pi * 0.5 * 0.1 + 1e-3  # half a pixel + slope x hold
    with pytest.raises(ValueError, match="unknown lead 'X'"):
        as_picture(data, "X", 320, 12.6)
    argv = ["--real", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--as-picture", "II:320"]
    assert main(argv) == 2 and "expected LEAD:SAMPLES:PX_PER_MV" in capsys.readouterr().err


def test_the_network_learns_simulated_atrial_fibrillation():
    """Not a network at chance: trained on 600 simulated records, it tells AF apart in 200 new ones."""
    import torch

    from utils.core.metrics import label_aurocs
    from utils.synth.realism import predict, train

    torch.set_num_threads(1)
    train_set, test = simulated_set(600, 5), simulated_set(200, 6)
    auc = label_aurocs(test.y, predict(train(train_set, epochs=6, seed=0), test.x))
    assert auc[LABELS.index("AF")] > 0.8


def test_measurements_real_beside_simulated(tmp_path):
    """--features' tables: medians per group and each measurement's AUROC alone, for real and simulated rows."""
    from utils.synth.checks import feature_medians, measured_with_real, separability
    from utils.synth.measure import FEATURES
    from utils.synth.wfdb_source import list_records

    _write_folder(tmp_path / "wfdb")
    refs, problems = list_records(tmp_path / "wfdb", tmp_path / "labels.csv")
    f, lab = measured_with_real(refs, n_sim=40)
    assert list(f["source"].value_counts().sort_index()) == [30, 40]  # the broken record skipped
    assert len(lab) == 70 and list(lab.columns) == list(LABELS)
    med = feature_medians(f, lab)
    assert set(med["source"]) == {"real", "sim"} and set(med["group"]) == {"NORM", *LABELS}
    sep = separability(f, lab)
    assert list(sep["feature"]) == list(FEATURES)
    rr = sep.set_index("feature").loc["rr_cv"]
    assert rr["AF_sim"] > 0.8 and rr["AF_real"] > 0.8  # irregular rhythm marks AF in both (here both simulated)
    values = sep.drop(columns="feature").to_numpy(float)
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1


def test_overlap_table_tells_shifted_from_matching_distributions(tmp_path):
    """overlap.csv: a measure shifted by three spreads in the simulated rows is far apart, an equal one overlaps; the
    per-group summary counts them, and the box plots are written."""
    from PIL import Image

    from utils.synth.checks import distribution_figure, overlap_summary, overlap_table

    rng = np.random.default_rng(0)
    n = 200
    same = rng.normal(0, 1, n)
    f = pd.DataFrame({"source": ["real"] * n + ["sim"] * n, "same": np.r_[same, same],
                      "shifted": np.r_[rng.normal(0, 1, n), rng.normal(3, 1, n)]})
    lab = pd.DataFrame(np.tile(np.eye(5, dtype=float)[rng.integers(0, 5, n)], (2, 1)), columns=list(LABELS))
    lab.iloc[:20] = 0.0  # NORM rows, real
    lab.iloc[n:n + 20] = 0.0  # and simulated
    table = overlap_table(f, lab, features=("same", "shifted"))
    assert len(table) == 6 * 2 and set(table["group"]) == {"NORM", *LABELS}
    same_rows, shifted = table[table["measure"] == "same"], table[table["measure"] == "shifted"]
    assert (same_rows["sim_vs_real_auroc"] == 0.5).all() and same_rows["overlaps"].all()
    assert (shifted["sim_vs_real_auroc"] > 0.9).all() and not shifted["overlaps"].any()
    assert (shifted["sim_median"] - shifted["real_median"]).between(2, 4).all()
    assert list(table.loc[table["group"] == "NORM", "n_real"]) == [20, 20]
    summary = overlap_summary(table).set_index("group")
    assert summary.loc["MI", "overlapping"] == "1 of 2" and summary.loc["MI", "furthest apart"].startswith("shifted")
    distribution_figure(f, lab, tmp_path / "d.png", features=("same", "shifted"))
    assert Image.open(tmp_path / "d.png").size[0] > 600
