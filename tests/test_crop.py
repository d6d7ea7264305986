"""The crop keeps the traces: on the synthesizer's report pages every lead box is kept and the header left out, a
page without traces falls back to the sheet (and says so), and the real-picture benchmark's boxes and verdicts."""
import cv2
import numpy as np
import pandas as pd
import pytest

from utils.bench.crop import BOXES, judge, kept_region, read_boxes
from utils.preprocess.cache import PrepSettings, prepare
from utils.preprocess.ink import traces_box
from utils.synth.generate import SynthSettings, make_sample


def report_pages(style: str, n: int = 8):
    for i in range(n):
        jpeg, ann, _ = make_sample(SynthSettings(style=style, seed=1, report_share=1.0, page_width=1100,
                                                 page_height=850), i)
        yield cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), ann


def holds(window, box, tol) -> bool:
    return window[0] <= box[0] + tol and window[1] <= box[1] + tol and window[2] >= box[2] - tol and \
        window[3] >= box[3] - tol


def covered(window, box) -> float:
    w, h = min(window[2], box[2]) - max(window[0], box[0]), min(window[3], box[3]) - max(window[1], box[1])
    return max(0.0, w) * max(0.0, h) / ((box[2] - box[0]) * (box[3] - box[1]))


@pytest.mark.parametrize("style,at_least", [("scan", 7), ("photo", 5)])
def test_the_crop_keeps_every_lead_and_leaves_the_header_out_on_report_pages(style, at_least):
    kept = header_out = 0
    for img, ann in report_pages(style):
        tol = 0.01 * max(img.shape[:2])
        _, rec = prepare(img, PrepSettings(crop_to="traces", long_side=512))
        _, sheet = prepare(img, PrepSettings(crop_to="sheet", long_side=512))
        assert rec["method"].endswith("+traces") and rec["window"] is not None
        kept += all(holds(rec["window"], b["box"], tol) for b in ann["lead_boxes"].values())
        header_out += covered(rec["window"], ann["report_boxes"]["header"]["box"]) <= 0.2
        assert covered(sheet["window"], ann["report_boxes"]["header"]["box"]) > 0.5  # the sheet's crop keeps it
    assert kept >= at_least and header_out >= at_least, (kept, header_out)


def test_a_page_without_traces_falls_back_to_the_sheet_and_says_why():
    img = np.full((600, 800, 3), 40, np.uint8)
    cv2.rectangle(img, (100, 80), (700, 520), (245, 245, 245), -1)  # a blank sheet on a dark table
    _, rec = prepare(img, PrepSettings(crop_to="traces", long_side=256))
    assert rec["method"] == "classical" and "traces: no trace ink found" in rec["reason"]
    assert rec["window"][0] < 110 and rec["window"][2] > 690  # the sheet, with its margin
    assert traces_box(np.full((300, 400, 3), 255, np.uint8)) == (None, "no trace ink found")
    _, raw = prepare(np.full((300, 400, 3), 128, np.uint8), PrepSettings(crop_to="traces", long_side=256))
    assert raw["applied"] == "raw" and raw["fallback"] == "raw" and "traces:" in raw["reason"]


def test_an_unknown_crop_is_refused():
    with pytest.raises(ValueError, match="crop_to 'paper': choose traces or sheet"):
        PrepSettings(crop_to="paper")


def test_the_drawn_boxes_cover_every_real_picture_and_are_valid():
    table = read_boxes(BOXES)
    assert len(table) == 52 and table["file"].is_unique
    assert table["header_x0"].notna().sum() == 10  # pictures with a header block
    assert (table["traces_y0"] >= table["header_y1"].fillna(-1) - 10).all()


def test_the_benchmark_judges_a_region_against_the_drawn_boxes(tmp_path):
    row = pd.Series({"traces_x0": 10, "traces_y0": 20, "traces_x1": 90, "traces_y1": 95, "header_x0": 10,
                     "header_y0": 2, "header_x1": 80, "header_y1": 15, "footer_x0": None, "footer_y0": None,
                     "footer_x1": None, "footer_y1": None})
    size = (1000, 500)
    whole = judge([0, 0, 1000, 500], row, size)
    assert whole["keeps_traces"] and not whole["header_out"] and whole["footer_out"]
    assert whole["traces_share"] == pytest.approx(0.8 * 0.75)
    tight = judge([100, 95, 900, 475], row, size)
    assert tight["keeps_traces"] and tight["header_out"] and tight["kept_and_header_out"]
    cut = judge([100, 150, 900, 475], row, size)  # 10% of the height cut from the top
    assert not cut["keeps_traces"]
    assert kept_region({"window": [1, 2, 3, 4]}, size) == [1, 2, 3, 4]
    bad = tmp_path / "boxes.csv"
    bad.write_text("file,traces_x0,traces_y0,traces_x1,traces_y1,header_x0,header_y0,header_x1,header_y1,"
                   "footer_x0,footer_y0,footer_x1,footer_y1,note\na.png,50,10,40,90,,,,,,,,,\n")
    with pytest.raises(ValueError, match=r"boxes.csv, line 2 \(a.png\): the traces box"):
        read_boxes(bad)
    bad.write_text("file,x\n")
    with pytest.raises(ValueError, match="no column traces_x0"):
        read_boxes(bad)


def test_rows_drawn_askew_are_levelled():
    from utils.preprocess.ink import level

    mask = np.zeros((400, 800), np.uint8)
    for y0 in (100, 200, 300):
        cv2.line(mask, (50, y0), (750, y0 - 120), 1, 2)  # rows rising by about 9.7 degrees
    levelled, tilt = level(mask > 0)
    assert tilt == pytest.approx(-10.0, abs=1.0)
    left, right = (np.flatnonzero(levelled[:, x]) for x in (150, 650))
    assert np.abs(left[:3] - right[:3]).max() <= 3  # the rows now run level
    flat, none = level(np.pad(np.ones((3, 700), bool), ((200, 200), (50, 50))))
    assert none == 0.0 and flat.sum() == 3 * 700


def test_a_read_only_mask_is_levelled_once_and_alike(monkeypatch):
    """A picture's shared ink (read-only) is levelled once for the turn and the crop: the same array asked again gets
    the same result without a second search, equal to a writable copy's; a new array is levelled afresh."""
    from utils.preprocess import ink

    mask = np.zeros((400, 800), np.uint8)
    for y0 in (100, 200, 300):
        cv2.line(mask, (50, y0), (750, y0 - 120), 1, 2)
    shared = mask > 0
    shared.flags.writeable = False
    searches = []
    search = ink._level
    monkeypatch.setattr(ink, "_level", lambda m, t: searches.append(1) or search(m, t))
    first, again = ink.level(shared), ink.level(shared)
    assert len(searches) == 1 and again[0] is first[0] and again[1] == first[1] == pytest.approx(-10.0, abs=1.0)
    assert not first[0].flags.writeable  # shared: no stage may change it
    own = ink.level(mask > 0)
    assert len(searches) == 2 and np.array_equal(own[0], first[0]) and own[1] == first[1]
    ink.level(shared.copy())  # another array, even with the same pixels: levelled afresh
    assert len(searches) == 3
