"""The digitiser reads the leads back from pictures the test draws (known traces -> correlation above a bar a broken
digitiser fails: wrong time or scale), names the rhythm strip's lead, flags flat leads, says why a
picture without a layout is not read, and writes WFDB records that read back; the accuracy measure and the
benchmark's command line."""
import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.signal import resample_poly

from utils.bench.digitise import main as bench_main
from utils.digitise.records import lead_accuracy, read_record, write_record
from utils.digitise.trace import FS, agreement, digitise, follow
from utils.synth.generate import SynthSettings, make_sample
from utils.synth.labels import sample_labels
from utils.synth.render import PageStyle, render_page
from utils.synth.waveform import LEADS, simulate


def record(seed: int):
    rng = np.random.default_rng(seed)
    return simulate(sample_labels(rng), rng)


def at_fs(signals, fs=500):
    return resample_poly(np.asarray(signals, np.float64), FS, fs, axis=1)[:, :10 * FS]


def page(signals, **style):
    img, boxes, _ = render_page(signals, 500, LEADS, PageStyle(width=1100, height=850, **style),
                             np.random.default_rng(0))
    return img


def median_r(d, true):
    return float(np.nanmedian([row["r"] for row in lead_accuracy(d.signals, true)]))


def test_a_clean_page_is_read_back_lead_by_lead_with_its_scale():
    rec = record(3)
    d = digitise(page(rec.signals))
    assert d.read and d.layout == "3x4" and d.rhythm_lead == "II" and d.pulses == 4
    px_mm = 1100 / 279.4
    assert d.px_per_mm == pytest.approx(px_mm, rel=0.03)
    assert d.px_per_mv == pytest.approx(10 * px_mm, rel=0.1)
    acc = {row["lead"]: row for row in lead_accuracy(d.signals, at_fs(rec.signals))}
    assert {lead: acc[lead]["samples"] for lead in LEADS} == {lead: 1000 if lead == "II" else 250 for lead in LEADS}
    assert all(acc[lead]["r"] >= 0.8 for lead in LEADS), {k: round(v["r"], 2) for k, v in acc.items()}
    assert np.median([acc[lead]["snr_db"] for lead in LEADS]) >= 7.5
    # half a second off in time, or at half the scale, would not pass these bars
    late = np.roll(d.signals, 50, axis=1)
    assert median_r(type(d)(late), at_fs(rec.signals)) < 0.5
    half = lead_accuracy(d.signals / 2, at_fs(rec.signals))
    assert np.median([row["snr_db"] for row in half]) < 6.5
    assert d.agreement >= 0.8


def test_the_rhythm_strip_lead_is_found_and_a_page_without_pulses_is_scaled_by_its_span():
    # a record without findings: an LVH of 5 mV crosses the neighbouring rows, which the follower does not untangle
    rec = simulate({}, np.random.default_rng(4))
    d = digitise(page(rec.signals, rhythm_lead="V1", calibration=False))
    assert d.read and d.rhythm_lead == "V1" and d.pulses == 0
    assert np.isfinite(d.signals[LEADS.index("V1")]).sum() == 1000
    assert d.px_per_mm == pytest.approx(1100 / 279.4, rel=0.03)
    assert median_r(d, at_fs(rec.signals)) >= 0.8


def test_scans_from_the_synthesizer_are_read_and_a_flat_lead_is_flagged():
    rs = []
    for i in range(4):
        jpeg, _, signals = make_sample(SynthSettings(style="scan", seed=5, page_width=1100, page_height=850), i)
        d = digitise(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
        assert d.read, d.problem
        rs.append(median_r(d, at_fs(signals)))
    assert np.median(rs) >= 0.7, rs
    flat = record(5).signals.copy()
    flat[LEADS.index("V3")] = 0.0
    d = digitise(page(flat))
    assert "V3 flat" in d.flags and "V3 flat" in d.note()


def test_a_lead_that_runs_off_its_band_is_flagged_clipped_and_an_ordinary_page_is_not():
    rec = record(5)
    assert not [f for f in digitise(page(rec.signals)).flags if f.endswith("clipped")]
    for step_mv in (4.0, -4.0):  # 0.8 s of V2 40 mm above or below its baseline, into the next row's band
        off = rec.signals.copy()
        off[LEADS.index("V2"), 2800:3200] += step_mv  # V2's panel is 5-7.5 s at 500 Hz
        d = digitise(page(off))
        assert d.read and [f for f in d.flags if f.endswith("clipped")] == ["V2 clipped"], d.flags
        assert "V2 clipped" in d.note()


def test_pictures_without_a_layout_say_why_and_give_no_signal():
    blank = np.full((850, 1100, 3), 255, np.uint8)
    d = digitise(blank)
    assert not d.read and d.problem == "no trace ink found" and np.isnan(d.signals).all()
    assert d.note() == "not digitised: no trace ink found"
    two = page(record(6).signals)
    two[430:] = 255  # the lower rows cut away
    d = digitise(two)
    assert not d.read and "row(s) of traces found" in d.problem and np.isnan(d.signals).all()


def test_wfdb_round_trip_keeps_the_leads_and_the_gaps(tmp_path):
    rec = record(7)
    d = digitise(page(rec.signals))
    hea = write_record(d, "page-7", tmp_path)
    assert hea.is_file() and (tmp_path / "page-7.dat").is_file()
    back = read_record(hea)
    assert back.shape == (12, 1000)
    assert np.array_equal(np.isnan(back), np.isnan(d.signals))
    shown = np.isfinite(d.signals)
    assert np.abs(back[shown] - d.signals[shown]).max() <= 0.0006  # 1 uV steps
    assert "3x4" in hea.read_text()


def test_lead_accuracy_forgives_a_small_shift_and_an_offset_and_nothing_else():
    true = at_fs(record(8).signals)
    read = np.full_like(true, np.nan)
    read[:, 100:350] = true[:, 103:353] + 0.3          # 3 samples early, 0.3 mV up
    acc = lead_accuracy(read, true)
    assert all(row["shift"] == 3 and row["r"] > 0.999 and row["snr_db"] > 30 for row in acc)
    noisy = read + np.random.default_rng(0).normal(0, 0.1, read.shape)
    assert np.median([row["snr_db"] for row in lead_accuracy(noisy, true)]) < 15
    assert agreement(true) > 0.99
    assert agreement(np.random.default_rng(1).normal(size=true.shape)) < 0.3


def test_the_benchmark_refuses_bad_levels_and_writes_its_tables(tmp_path, capsys):
    assert bench_main(["--levels", "a,b", "--out", str(tmp_path)]) == 2
    assert "--levels 'a,b'" in capsys.readouterr().err
    assert bench_main(["--synthetic", "1", "--levels", "1", "--workers", "1", "--out", str(tmp_path)]) == 0
    out = next(tmp_path.iterdir())
    assert {"leads.csv", "pictures.csv", "digitise.md"} <= {p.name for p in out.iterdir()}
    text = (out / "digitise.md").read_text()
    assert "synthetic scan" in text and "synthetic photo" in text
    pics = pd.read_csv(out / "pictures.csv")
    assert "true mask, levelled, dB 0.2 s" in text and "mean SNR dB, 0.2 s" in text
    # the ceiling (the true mask read back) stands well above the classical reading of the same pictures
    leads = pd.read_csv(out / "leads.csv")
    assert (pics["ceiling levelled dB"] > 10).all() and pics["ceiling levelled dB"].mean() > leads["snr_db"].mean() + 5
    assert (leads["snr_db_02"] >= leads["snr_db"] - 1e-9).all()  # a wider shift forgives more, never less


def test_benchmark_reads_real_pictures_without_signals_and_names_a_bad_one(tmp_path, capsys):
    """--pictures: each picture read (or why not), and the limb leads' agreement, no truth needed."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(2):  # clean pages of records without findings, whose limb leads the follower reads whole
        ok, jpeg = cv2.imencode(".jpg", page(simulate({}, np.random.default_rng(i)).signals))
        (folder / f"scan{i}.jpg").write_bytes(jpeg.tobytes())
    (folder / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "notes.txt").write_text("side file")
    assert bench_main(["--synthetic", "0", "--pictures", str(folder), "--workers", "1",
                       "--out", str(tmp_path / "out")]) == 0
    assert "1 file(s) that are not pictures (.txt): notes.txt" in capsys.readouterr().out
    out = next((tmp_path / "out").iterdir())
    rows = pd.read_csv(out / "real-pictures.csv").set_index("picture")
    assert sorted(rows.index) == ["bad.jpg", "scan0.jpg", "scan1.jpg"]
    assert rows.loc["bad.jpg", "problem"].startswith("not read:")
    assert rows.loc[["scan0.jpg", "scan1.jpg"], "classical read"].astype(bool).all()
    assert (rows.loc[["scan0.jpg", "scan1.jpg"], "classical agreement"] > 0.6).all()  # a clean scan obeys the laws
    assert "Real pictures without signals" in (out / "digitise.md").read_text()


def test_the_follower_keeps_to_the_run_nearest_its_last_position_and_keeps_a_peak():
    band = np.zeros((40, 8), bool)
    band[20, 0] = True                  # the trace on its baseline
    band[19:21, 1] = True
    band[[5, 18], 2] = True             # a grid dot far above, the trace near where it was
    band[[16, 20], 3] = True            # two runs as near as each other: the first (upper) one
    band[2:22, 5] = True                # a tall stroke whose neighbours lie nearer the baseline: its far end
    band[21, 4] = band[21, 6] = True
    ys = follow(band, start=20.0, long_run=6)
    np.testing.assert_array_equal(ys[[0, 1, 2, 3, 4, 5, 6]], [20, 19.5, 18, 16, 21, 2, 21])
    assert np.isnan(ys[7])              # no ink: no position
    assert np.isnan(follow(np.zeros((10, 5), bool), 5.0, 3)).all()
