"""The trace segmenter (utils/digitise/segment.py): its target, a tiny training run, its file, the digitiser on it."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.config import ConfigError
from utils.digitise import segment as seg
from utils.digitise.trace import digitise, digitise_turned
from utils.ensemble.predict import main as predict_main
from utils.ensemble.predictor import Predictor
from utils.ensemble.signal import digitise_files, segmenter_for
from utils.preprocess.orient import find_turn
from utils.synth.generate import SynthSettings, make_picture


@pytest.fixture(scope="module")
def tiny():
    """A network trained for a minute on 10 pictures, and the IoU of it and of an untrained one on 3 new ones."""
    torch.set_num_threads(2)
    model, info = seg.train(pictures=10, steps=TINY_STEPS, seed=3, workers=1, progress=False, log=None)
    untrained = seg.trace_net().eval()
    pairs = [seg.drawn_pair((4, i)) for i in range(3)]
    return model, info, [seg.iou(seg.mask_of(model, a), b) for a, b in pairs], \
        [seg.iou(seg.mask_of(untrained, a), b) for a, b in pairs]


TINY_STEPS = 150


def test_the_target_marks_every_panel_and_pulse_and_little_else():
    img, tgt = seg.drawn_pair((1, 0))
    assert img.shape[:2] == tgt.shape and max(tgt.shape) == seg.WORK_SIDE
    sample = make_picture(seg._settings(1, 0), 0)
    traces = sample.traces.scaled(tgt.shape[1] / sample.ann["image_size"][0])
    for key, pts in traces.panels.items():
        xy = np.round(pts[np.isfinite(pts).all(1)]).astype(int)
        assert (tgt[xy[:, 1], xy[:, 0]] >= 128).mean() >= 0.95, key
    assert 0.002 < (tgt >= 128).mean() < 0.08  # thin lines, not the page


def test_a_tiny_run_learns_the_traces_of_new_pictures(tiny):
    model, info, learned, untrained = tiny
    assert info["steps"] == TINY_STEPS and info["pictures"] == 10 and info["crops"] == 120
    assert np.mean(learned) >= 0.5 and min(learned) > max(untrained) + 0.2, (learned, untrained)


def test_a_segmenter_file_round_trips_and_a_bad_one_is_named(tiny, tmp_path):
    model, info, _, _ = tiny
    seg.save(model, info, tmp_path / "s.pt")
    back, back_info = seg.load(tmp_path / "s.pt")
    img, _ = seg.drawn_pair((4, 0))
    assert np.allclose(seg.mask_of(back, img), seg.mask_of(model, img), atol=1e-6) and back_info == info
    with pytest.raises(seg.SegmenterError, match="nothing.pt: no segmenter file there"):
        seg.load(tmp_path / "nothing.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "s.pt").read_bytes()[:2000])
    with pytest.raises(seg.SegmenterError, match="cut.pt: not a segmenter file"):
        seg.load(tmp_path / "cut.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(seg.SegmenterError, match="other.pt: not a segmenter .format 'something else'"):
        seg.load(tmp_path / "other.pt")
    blob = torch.load(tmp_path / "s.pt", weights_only=True)
    blob["widths"] = [8, 16, 32, 64]
    torch.save(blob, tmp_path / "wide.pt")
    with pytest.raises(seg.SegmenterError, match="wide.pt: its weights do not fit the network"):
        seg.load(tmp_path / "wide.pt")
    assert seg.main(["--pictures", "0", "--out", str(tmp_path)]) == 2


def test_the_digitiser_follows_the_segmenters_mask(tiny):
    """On a clean scan, the tiny network's mask gives the digitiser the page's rows and layout, as the ink does."""
    model = tiny[0]
    sample = make_picture(SynthSettings(style="scan", seed=9, page_width=1100, page_height=850, severity=0.5), 0)
    img = seg.cv2.imdecode(np.frombuffer(sample.jpeg, np.uint8), seg.cv2.IMREAD_COLOR)
    classical, learned = digitise(img), digitise(img, segmenter=model)
    assert classical.read and learned.read, (classical.problem, learned.problem)
    assert learned.layout == classical.layout == "3x4"


def test_the_column_target_marks_each_columns_instant_and_an_unknown_kind_is_refused():
    """The column target: per column at most two pixels per row of the page (a steep stroke is not smeared over its
    neighbours' columns), lying inside the line target; an unknown kind is one clear error."""
    img, _ = seg.drawn_pair((1, 0))
    sample = make_picture(seg._settings(1, 0), 0)
    shape = img.shape[:2]
    traces = sample.traces.scaled(shape[1] / sample.ann["image_size"][0])
    line, column = seg.target(traces, shape, "line") >= 128, seg.target(traces, shape, "column") >= 128
    per_column = column.sum(0)
    assert per_column.max() <= 2 * traces.n_rows + 2 and column.sum() < 0.5 * line.sum()
    assert (line | ~column).mean() > 0.999 and (column & line).sum() >= 0.95 * column.sum()
    with pytest.raises(ValueError, match="target kind 'blob'"):
        seg.target(traces, shape, "blob")


def test_the_benchmark_reads_through_a_segmenter_file_and_draws_its_mask(tiny, tmp_path):
    from utils.bench.digitise import main as bench_main

    seg.save(tiny[0], tiny[1], tmp_path / "s.pt")
    assert bench_main(["--synthetic", "1", "--levels", "1", "--workers", "1", "--segmenter", str(tmp_path / "s.pt"),
                       "--out", str(tmp_path / "out")]) == 0
    out = next((tmp_path / "out").iterdir())
    text = (out / "digitise.md").read_text()
    assert "segmenter median r" in text and (out / "segmented.png").stat().st_size > 20_000
    (tmp_path / "bad.pt").write_bytes(b"nothing")
    assert bench_main(["--synthetic", "1", "--segmenter", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()  # refused before any picture was drawn or folder made


def test_the_segmenter_as_an_entry_round_trips_and_a_damaged_one_is_named(tiny):
    model, info = tiny[0], tiny[1]
    back, back_info = seg.from_entry(seg.entry(model, info), "here")
    img, _ = seg.drawn_pair((4, 1))
    assert np.array_equal(seg.mask_of(back, img), seg.mask_of(model, img)) and back_info == info
    for damage, says in (({"widths": [8, 16]}, "here: its widths \\[8, 16\\] are not 4 channel counts"),
                         ({"state": {}}, "here: its weights do not fit the network"),
                         ({"format": "x"}, "here: not a segmenter .format 'x'")):
        with pytest.raises(seg.SegmenterError, match=says):
            seg.from_entry({**seg.entry(model, info), **damage}, "here")


def test_a_package_digitises_through_its_segmenter_and_says_when_it_cannot(tiny, signal_package, tmp_path, capsys):
    """The package's trace segmenter is what predict's digitiser follows (the same leads as the digitiser given the
    network); a damaged one is one warning line, and each row names the classical ink it fell back on."""

    pkg = torch.load(signal_package, weights_only=True)
    sample = make_picture(SynthSettings(style="scan", seed=9, page_width=1100, page_height=850, severity=0.5), 0)
    (tmp_path / "page.jpg").write_bytes(sample.jpeg)
    img = seg.cv2.imread(str(tmp_path / "page.jpg"))
    pred_orient = Predictor(signal_package).orient
    orient = find_turn(img, pred_orient["turn_evidence"])
    learned = digitise_turned(img, orient, segmenter=tiny[0])[0]
    classical = digitise_turned(img, orient)[0]
    assert learned.read and not np.array_equal(learned.signals, classical.signals, equal_nan=True)
    for name, entry, digitiser, expected in (
            ("good", seg.entry(tiny[0], tiny[1]), "segmenter", learned),
            ("damaged", {**seg.entry(tiny[0], tiny[1]), "state": {}},
             "classical (the package's segmenter is damaged)", classical)):
        torch.save({**pkg, "signal": {**pkg["signal"], "segmenter": entry}}, tmp_path / f"{name}.pt")
        reading = Predictor(tmp_path / f"{name}.pt").read_one(tmp_path / "page.jpg")
        np.testing.assert_array_equal(reading.rec["digitised"].signals, expected.signals)
        out = tmp_path / f"{name}.csv"
        assert predict_main(["--model", str(tmp_path / f"{name}.pt"), "--images", str(tmp_path / "page.jpg"),
                             "--out", str(out)]) == 0
        row = pd.read_csv(out).iloc[0]
        assert row["digitiser"] == digitiser and row["digitised"] == expected.note()
        said = capsys.readouterr().out
        warned = "WARNING the package's trace segmenter: its weights do not fit the network" in said
        assert warned == (name == "damaged"), said


def test_step_05s_segmenter_is_trained_once_per_setting_or_read_from_a_file(tmp_path):

    cfg = SimpleNamespace(segmenter="train", segmenter_pictures=3, segmenter_steps=10, segmenter_check=1, seed=0,
                          device="cpu", num_workers=1)
    assert segmenter_for(SimpleNamespace(segmenter=""), tmp_path) == (None, {})
    path, info = segmenter_for(cfg, tmp_path)
    assert path == tmp_path / "segmenter.pt" and info["steps"] == 10 and 0 <= info["check"]["iou"] <= 1
    assert info["settings"] == {"pictures": 3, "steps": 10, "seed": 0, "check": 1}
    stamp = path.stat().st_mtime_ns
    assert segmenter_for(cfg, tmp_path)[0] == path and path.stat().st_mtime_ns == stamp  # kept, not trained again
    assert segmenter_for(SimpleNamespace(**{**vars(cfg), "segmenter_steps": 2}), tmp_path)[1]["steps"] == 2
    given = SimpleNamespace(segmenter=str(path))
    assert segmenter_for(given, tmp_path / "elsewhere") == (path, seg.load(path)[1])
    with pytest.raises(ConfigError, match="segmenter: .*nothing.pt: no segmenter file there"):
        segmenter_for(SimpleNamespace(segmenter=str(tmp_path / "nothing.pt")), tmp_path)
    # the out-of-fold leads are kept per digitiser: read again when it changes
    (tmp_path / "page.jpg").write_bytes(make_picture(SynthSettings(style="scan", seed=9, page_width=1100,
                                                                   page_height=850), 0).jpeg)
    cache = tmp_path / "oof.npz"
    digitise_files([str(tmp_path / "page.jpg")], 3.0, cache, workers=1)
    assert str(np.load(cache)["digitiser"]) == "classical"
    digitise_files([str(tmp_path / "page.jpg")], 3.0, cache, workers=1, segmenter=str(path))
    assert str(np.load(cache)["digitiser"]).startswith("segmenter ")
