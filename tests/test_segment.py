"""The trace segmenter (utils/digitise/segment.py): its target, a tiny training run, its file, the digitiser on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.digitise import segment as seg
from utils.digitise.trace import digitise
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
    with pytest.raises(seg.SegmenterError, match="other.pt: not a segmenter file .format 'something else'"):
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
