"""Renderer and artefacts: page geometry, annotations that point at the right pixels, style independence."""
import cv2
import numpy as np
import pytest

from utils.core.splines import catmull_rom, random_blob
from utils.synth.generate import SynthSettings, make_sample
from utils.synth.photo import make_photo
from utils.synth.render import LAYOUTS, PageStyle, draw_page_style, render_page
from utils.synth.scan import make_scan
from utils.synth.waveform import LEADS, simulate

SMALL = dict(page_width=660, page_height=510, photo_max_side=800)


def _page(layout="3x4", seed=0):
    rec = simulate({}, np.random.default_rng(seed))
    style = PageStyle(width=1100, height=850, layout=layout)
    return render_page(rec.signals, rec.fs, LEADS, style, np.random.default_rng(seed))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_page_has_every_lead_inside_it(layout):
    page, boxes, _ = _page(layout)
    assert page.shape == (850, 1100, 3) and page.dtype == np.uint8
    assert set(LEADS) <= set(boxes)
    if layout != "12x1":
        assert "II_rhythm" in boxes and boxes["II_rhythm"][2] - boxes["II_rhythm"][0] > 0.85 * 1100
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 < x1 <= 1100 and 0 <= y0 < y1 <= 850


def test_trace_pixels_are_dark_inside_lead_boxes():
    page, boxes, _ = _page()
    grey = cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
    x0, y0, x1, y1 = (int(v) for v in boxes["V2"])
    assert grey[y0:y1, x0:x1].min() < 90  # the ink of the trace
    assert np.median(grey) > 180           # mostly paper


def _marked_page():
    page = np.full((850, 1100, 3), 245, np.uint8)
    page[400:430, 700:730] = 0  # a black square at a known page position
    return page


@pytest.mark.parametrize("maker", ["photo", "scan"])
def test_forward_map_puts_annotations_on_the_right_pixels(maker):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pic = make_photo(_marked_page(), rng, 1400, 1.0) if maker == "photo" else make_scan(_marked_page(), rng)
        x, y = pic.forward(np.array([[715.0, 415.0]]))[0]
        grey = cv2.cvtColor(pic.image, cv2.COLOR_BGR2GRAY)
        patch = grey[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3]
        assert patch.size and patch.mean() < 90, f"seed {seed}: marker not at its mapped position"
        corners = pic.forward(np.array([[0, 0], [1100, 0], [1100, 850], [0, 850]], float))
        h, w = pic.image.shape[:2]
        assert (corners >= -1).all() and (corners[:, 0] <= w + 1).all() and (corners[:, 1] <= h + 1).all()


def test_sample_annotations_are_consistent():
    data, ann, signals = make_sample(SynthSettings(style="photo", **SMALL), 7)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert [img.shape[1], img.shape[0]] == ann["image_size"]
    cx, cy, bw, bh = ann["paper_box_yolo"]
    assert 0 < bw <= 1 and 0 < bh <= 1 and 0 <= cx - bw / 2 and cx + bw / 2 <= 1.000001
    w, h = ann["image_size"]
    corners = np.array(ann["paper_corners"])
    assert (corners[:, 0] >= (cx - bw / 2) * w - 1).all() and (corners[:, 0] <= (cx + bw / 2) * w + 1).all()
    assert set(LEADS) <= set(ann["lead_boxes"]) and signals.shape == (12, 5000)
    assert set(ann["labels"]) == {"MI", "AF", "HYP", "CD", "STTC"}


def test_style_and_artefacts_do_not_depend_on_labels():
    settings = SynthSettings(style="photo", **SMALL)
    for index in range(4):
        _, drawn, _ = make_sample(settings, index)
        flipped = {k: 1 - v for k, v in drawn["labels"].items()}
        _, forced, _ = make_sample(settings, index, labels=flipped)
        assert forced["labels"] == flipped
        assert forced["artefacts"] == drawn["artefacts"] and forced["page"] == drawn["page"]
        assert forced["paper_corners"] == drawn["paper_corners"]


def test_same_index_same_bytes_and_styles_differ():
    s = SynthSettings(style="scan", **SMALL)
    assert make_sample(s, 3)[0] == make_sample(s, 3)[0]
    assert make_sample(s, 3)[0] != make_sample(s, 4)[0]
    assert make_sample(SynthSettings(style="photo", **SMALL), 3)[1]["waveform"] != make_sample(s, 3)[1]["waveform"]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="style must be one of"):
        SynthSettings(style="fax")
    with pytest.raises(ValueError, match="too small"):
        SynthSettings(page_width=100)
    assert draw_page_style(np.random.default_rng(0), 800, 600, ("6x2",)).layout == "6x2"


def test_catmull_rom_passes_through_its_points():
    pts = np.array([[0, 0], [10, 5], [20, 0], [30, 8]], float)
    curve = catmull_rom(pts, samples=8)
    for p in pts:
        assert np.min(np.linalg.norm(curve - p, axis=1)) < 1e-9
    closed = random_blob(np.random.default_rng(0), (50, 50), 20)
    assert closed.shape[1] == 2 and np.linalg.norm(closed.mean(0) - 50) < 12
    with pytest.raises(ValueError, match="at least 2 points"):
        catmull_rom(np.zeros((1, 2)))
