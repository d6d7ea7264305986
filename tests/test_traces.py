"""The traces as drawn (utils/synth/traces.py): they lie on the picture's ink, survive storage, and read back."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.signal import resample_poly

from utils.digitise.records import lead_accuracy
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings, make_picture
from utils.synth.traces import (STEP, TraceError, column_mask, extent, levelled, load, read_back, read_columns, save)
from utils.synth.waveform import LEADS

SMALL = dict(page_width=1100, page_height=850, photo_max_side=1400)
KINDS = {"scan": dict(style="scan"), "photo": dict(style="photo"),
         "crumpled photo": dict(style="photo", crumple=1.5), "report page": dict(style="scan", report_share=1.0)}


def _decode(sample) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(sample.jpeg, np.uint8), cv2.IMREAD_COLOR)


def _darkness_near(img: np.ndarray, points: np.ndarray) -> np.ndarray:
    """At each point, the darkest ink within one pixel: how far below the paper around it (a 15 px closing of the
    pixel's largest channel, so a coloured grid counts as paper) the picture is there, as a share of the paper."""
    value = img.max(axis=2).astype(np.float32)
    paper = cv2.morphologyEx(value, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    dark = cv2.dilate((paper - value) / np.maximum(paper, 32), np.ones((3, 3), np.uint8))
    xy = np.round(points).astype(int)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < img.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < img.shape[0])
    return dark[xy[inside, 1], xy[inside, 0]]


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_traces_lie_on_the_ink_drawn_in_the_picture(kind):
    """After every transform (turn, perspective, curl, a crumpled sheet's relief), the stored points sit within a
    pixel of the trace's ink; the same points moved 6 px off it do not, so the measure can fail."""
    for index in range(3):
        sample = make_picture(SynthSettings(seed=7, **SMALL, **KINDS[kind]), index)
        img = _decode(sample)
        pts = np.concatenate([p[::7] for p in sample.traces.panels.values()])
        pts = pts[np.isfinite(pts).all(1)]
        assert len(pts) > 400 and set(sample.traces.panels) >= set(LEADS)
        on, off = _darkness_near(img, pts), _darkness_near(img, pts + [0.0, 6.0])
        ink = 0.3 * np.percentile(_darkness_near(img, np.argwhere(np.ones(img.shape[:2]))[:, ::-1]), 99.5)
        # at least 93%: a steep stroke's ink is thinnest on a crumpled photo's relief, and records with real
        # chest-lead sizes have more of them
        assert np.mean(on >= ink) >= 0.93, (kind, index, np.mean(on >= ink))
        assert np.median(on) >= 2.5 * np.median(off), (kind, index, np.median(on), np.median(off))


def test_traces_survive_storage_to_an_eighth_of_a_pixel_and_a_damaged_file_is_named(tmp_path):
    sample = make_picture(SynthSettings(style="photo", seed=3, crumple=1.0, **SMALL), 0)
    tr = sample.traces
    save(tr, tmp_path / "t.npz")
    back = load(tmp_path / "t.npz")
    assert list(back.panels) == list(tr.panels) and back.starts == tr.starts and back.rows == tr.rows
    for key in tr.panels:
        for name in ("panels", "zero", "one"):
            a, b = getattr(tr, name)[key], getattr(back, name)[key]
            assert a.shape == b.shape and np.nanmax(np.abs(a - b)) <= 0.5 / STEP + 1e-9
    assert back.fs == 500 and abs(back.width_px - tr.width_px) < 1e-9
    gap = tr.panels["I"].copy()
    gap[10:20] = np.nan  # a recorded signal with a gap
    tr.panels["I"] = gap
    save(tr, tmp_path / "gap.npz")
    assert np.isnan(load(tmp_path / "gap.npz").panels["I"][10:20]).all()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(TraceError, match="bad.npz: not a trace file"):
        load(tmp_path / "bad.npz")
    tr.panels["V6"] = tr.panels["V6"] + 9000.0
    with pytest.raises(TraceError, match=r"panels \['V6'\] lie outside"):
        save(tr, tmp_path / "far.npz")


def _snr(traces, true: np.ndarray, shape) -> float:
    read = read_back(traces, read_columns(column_mask(traces, shape)))
    return float(np.nanmean([r["snr_db"] for r in lead_accuracy(read, true, 20) if r["samples"]]))


def test_the_true_mask_reads_back_the_signal_and_another_pictures_does_not():
    """The ceiling: a scan's true column mask read per column gives its leads back well above the digitiser's
    figures; levelled, a turned photo's too; the mask of another picture gives noise."""
    scores = {}
    for style in ("scan", "photo"):
        sample = make_picture(SynthSettings(style=style, seed=11, **SMALL), 1)
        true = resample_poly(sample.signals.astype(np.float64), 100, 500, axis=1)[:, :1000]
        tr = sample.traces
        flat = levelled(tr)
        scores[style] = (_snr(tr, true, _decode(sample).shape[:2]), _snr(flat, true, extent(flat)))
        other = make_picture(SynthSettings(style=style, seed=11, **SMALL), 2)
        assert _snr(levelled(other.traces), true, extent(levelled(other.traces))) < 3.0
    assert scores["scan"][0] >= 15.0 and scores["scan"][1] >= 15.0, scores
    assert scores["photo"][1] >= 10.0, scores


def test_a_dataset_writes_each_pictures_traces_when_asked(tmp_path):
    settings = SynthSettings(style="scan", seed=5, page_width=550, page_height=425)
    generate_dataset(tmp_path / "set", settings, n_train=2, n_test=1, workers=1, progress=False, save_traces=True)
    files = sorted(p.name for p in (tmp_path / "set" / "traces").iterdir())
    assert files == ["000000.npz", "000001.npz", "000002.npz"]
    stored = load(tmp_path / "set" / "traces" / "000002.npz")
    drawn = make_picture(settings, 2).traces
    assert np.nanmax(np.abs(stored.panels["II_rhythm"] - drawn.panels["II_rhythm"])) <= 0.5 / STEP + 1e-9
    generate_dataset(tmp_path / "plain", settings, n_train=1, workers=1, progress=False)
    assert not (tmp_path / "plain" / "traces").exists()
