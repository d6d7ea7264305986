"""Crumpled and creased paper: the height field and its shading on small arrays, pictures at each strength."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from utils.synth.crumple import crumple_page, height_field, relief_warp, shading
from utils.synth.generate import SynthSettings, make_sample


def test_a_flat_sheet_is_left_as_it_was():
    page = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    out, info, warp = crumple_page(page, np.random.default_rng(1), 0.0)
    assert out is page and info["crumple_folds"] == 0 and info["creases"] == 0 and warp is None
    field, _ = height_field(np.random.default_rng(1), 60, 80, 0.0)
    assert not field.any()
    np.testing.assert_allclose(shading(np.zeros((20, 30), np.float32), 45.0), 1.0, atol=1e-6)


def test_facets_are_lit_by_the_side_they_face():
    ramp = np.tile(np.linspace(0, 0.3, 40, dtype=np.float32), (30, 1))  # rises to the right: it faces left
    from_left, from_right = shading(ramp, 180.0).mean(), shading(ramp, 0.0).mean()
    assert from_left > 1.0 > from_right
    # a fold: two facets meeting at a crease, one lit and one in shadow, with a hard edge between them
    x = np.linspace(-1, 1, 41, dtype=np.float32)
    fold = np.tile(0.2 * np.abs(x), (20, 1))
    lit = shading(fold, 0.0)[10]  # the left facet descends to the right: it faces the light
    assert lit[5] > 1.0 > lit[35] and abs(lit[22] - lit[18]) > 0.3 * abs(lit[35] - lit[5])


def test_heavier_crumpling_darkens_more_and_creases_run_at_any_angle():
    page = np.full((200, 260, 3), 230, np.uint8)
    spread = []
    for strength in (0.5, 1.5, 3.0):
        out, info, _ = crumple_page(page, np.random.default_rng(7), strength)
        spread.append(float(out.std()))
        assert info["crumple_folds"] > 0 and out.shape == page.shape and out.dtype == np.uint8
    assert spread[0] < spread[2]
    _, info, _ = crumple_page(page, np.random.default_rng(3), 1.0, creases=8)
    angles = [f["angle_deg"] for f in info["folds"] if f["crease"]]
    assert len(angles) == 8 and max(angles) - min(angles) > 45  # not only horizontal or vertical
    # more creases keep the same crumpling (their own random stream)
    _, more, _ = crumple_page(page, np.random.default_rng(3), 1.0, creases=9)
    assert [f for f in more["folds"] if not f["crease"]] == [f for f in info["folds"] if not f["crease"]]


def test_the_relief_moves_points_only_where_the_sheet_bends():
    yy, xx = np.mgrid[0:50, 0:80].astype(np.float32)
    points = np.stack(np.meshgrid(np.linspace(0, 319, 30), np.linspace(0, 199, 20)), -1)
    plane, _ = relief_warp(0.01 * xx + 0.02 * yy + 0.3, (200, 320), 30.0, 0.2)  # a tilted flat sheet: no bend
    np.testing.assert_allclose(plane(points), 0.0, atol=1e-4)
    fold = 0.05 * np.abs(xx - 40) / 50  # one crease down the middle (x = 160 px on the page)
    warp, largest = relief_warp(fold, (200, 320), 0.0, 0.2)
    moved = warp(points)
    assert moved.shape == points.shape and np.abs(moved[..., 1]).max() < 1e-9  # along the view direction only
    row = moved[10, :, 0]
    assert np.allclose(moved[0, :, 0], row)  # the same along the crease
    assert largest > 0.5 and np.abs(row).max() <= largest + 1e-6
    slope = np.diff(row) / np.diff(points[10, :, 0])
    assert slope[:10].mean() < 0 < slope[-10:].mean()  # a kink at the crease: the trace bends there
    flat, _ = relief_warp(fold, (200, 320), 0.0, 0.0)  # seen from straight above: nothing moves
    assert not flat(points).any()


def test_a_crumpled_photo_shows_the_page_where_its_annotation_says():
    """The picture's forward map includes the relief: marks on the page land where the map sends them, although the
    relief moved them by more than the tolerance."""
    from utils.synth.photo import make_photo

    page = np.full((680, 880, 3), 235, np.uint8)
    marks = np.array([[120, 100], [440, 340], [760, 580], [220, 600], [700, 120]])
    for x, y in marks:
        cv2.circle(page, (int(x), int(y)), 3, (0, 0, 0), -1)
    crumpled, info, warp = crumple_page(page, np.random.default_rng(17), 3.0)
    pic = make_photo(crumpled, np.random.default_rng(4), 1000, severity=0.0, shadow=0.0, blur=0.0, relief=warp)
    flat = make_photo(crumpled, np.random.default_rng(4), 1000, severity=0.0, shadow=0.0, blur=0.0)
    gray = cv2.cvtColor(pic.image, cv2.COLOR_BGR2GRAY).astype(float)
    for mark, seen in zip(marks, pic.forward(marks.astype(float))):
        x, y = np.round(seen).astype(int)
        window = gray[y - 8:y + 9, x - 8:x + 9]
        dy, dx = np.unravel_index(window.argmin(), window.shape)
        assert np.hypot(dx - 8, dy - 8) <= 1.5, (mark, seen)
    moved = np.linalg.norm(pic.forward(marks.astype(float)) - flat.forward(marks.astype(float)), axis=1)
    assert moved.max() > 3.0 and info["relief"]["largest_shift_px"] > moved.max()  # the relief moved the trace


@pytest.mark.parametrize("style", ["scan", "photo"])
def test_pictures_at_each_strength_keep_their_annotation_inside_the_page(style):
    base = SynthSettings(style=style, page_width=440, page_height=340, photo_max_side=520, seed=5)
    clean, ann0, _ = make_sample(base, 2)
    for strength in (1.0, 3.0):
        data, ann, _ = make_sample(SynthSettings(**{**base.__dict__, "crumple": strength}), 2)
        w, h = ann["image_size"]
        corners = np.array(ann["paper_corners"])
        assert (corners >= -1).all() and (corners[:, 0] <= w + 1).all() and (corners[:, 1] <= h + 1).all()
        moved = np.abs(corners - np.array(ann0["paper_corners"])).max()
        if style == "scan":  # pressed flat on the glass: shading only
            assert moved == 0.0 and "relief" in ann["artefacts"]["crumple"]
        else:  # the camera sees the bends: the sheet moves a little, never off the page
            assert 0.0 < moved < 0.05 * max(w, h)
        for lead in ann["lead_boxes"].values():
            box = np.array(lead["box"])
            assert (box >= -1).all() and box[2] <= w + 1 and box[3] <= h + 1
        assert ann["labels"] == ann0["labels"]
        assert ann["artefacts"]["crumple"]["strength"] == strength and data != clean
    assert "crumple" not in SynthSettings().to_dict() and SynthSettings(crumple=2.0).to_dict()["crumple"] == 2.0
    with pytest.raises(ValueError, match="crumple must lie between 0 and 10"):
        SynthSettings(crumple=-1)


def test_the_training_mix_crumples_its_share_of_pictures():
    """crumple_rate: about that share of pictures drawn crumpled, each at a strength of its own; the rest unchanged."""
    from utils.synth.generate import CRUMPLE_DRAWN, SynthSettings, make_sample

    mix = SynthSettings(style="scan", page_width=330, page_height=255, crumple_rate=0.4, jpeg_quality=90)
    flat = SynthSettings(style="scan", page_width=330, page_height=255, jpeg_quality=90)
    drawn = []
    for i in range(40):
        jpeg, ann, _ = make_sample(mix, i)
        if "crumple" in ann["artefacts"]:
            drawn.append(ann["artefacts"]["crumple"]["strength"])
        else:
            assert jpeg == make_sample(flat, i)[0]  # a picture left flat is the flat set's picture
    assert 8 <= len(drawn) <= 24 and all(CRUMPLE_DRAWN[0] <= s <= CRUMPLE_DRAWN[1] for s in drawn)
    assert len(set(drawn)) == len(drawn)
    with pytest.raises(ValueError, match="crumple_rate is a share of pictures"):
        SynthSettings(crumple_rate=1.5)


def test_the_sheet_finder_is_measured_on_crumpled_pictures():
    from utils.bench.synth import sheet_finder_on_crumpled

    table = sheet_finder_on_crumpled(440, 340, 3, strengths=(0.0, 3.0))
    assert list(table.columns) == ["style", "crumple", "pictures", "fallback_rate", "iou_median", "iou_p5"]
    assert len(table) == 4 and set(table["style"]) == {"scan", "photo"} and (table["pictures"] == 3).all()
    assert table["fallback_rate"].between(0, 1).all() and (table["iou_p5"] <= table["iou_median"]).all()
    flat_scan = table[(table["style"] == "scan") & (table["crumple"] == 0.0)].iloc[0]
    assert flat_scan["iou_median"] > 0.7  # a flat scan's sheet is found
