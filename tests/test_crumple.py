"""Crumpled and creased paper: the height field and its shading on small arrays, pictures at each strength."""
from __future__ import annotations

import numpy as np
import pytest

from utils.synth.crumple import crumple_page, height_field, shading
from utils.synth.generate import SynthSettings, make_sample


def test_a_flat_sheet_is_left_as_it_was():
    page = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    out, info = crumple_page(page, np.random.default_rng(1), 0.0)
    assert out is page and info["crumple_folds"] == 0 and info["creases"] == 0
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
        out, info = crumple_page(page, np.random.default_rng(7), strength)
        spread.append(float(out.std()))
        assert info["crumple_folds"] > 0 and out.shape == page.shape and out.dtype == np.uint8
    assert spread[0] < spread[2]
    _, info = crumple_page(page, np.random.default_rng(3), 1.0, creases=8)
    angles = [f["angle_deg"] for f in info["folds"] if f["crease"]]
    assert len(angles) == 8 and max(angles) - min(angles) > 45  # not only horizontal or vertical
    # more creases keep the same crumpling (their own random stream)
    _, more = crumple_page(page, np.random.default_rng(3), 1.0, creases=9)
    assert [f for f in more["folds"] if not f["crease"]] == [f for f in info["folds"] if not f["crease"]]


@pytest.mark.parametrize("style", ["scan", "photo"])
def test_pictures_at_each_strength_keep_their_annotation_inside_the_page(style):
    base = SynthSettings(style=style, page_width=440, page_height=340, photo_max_side=520, seed=5)
    clean, ann0, _ = make_sample(base, 2)
    for strength in (1.0, 3.0):
        data, ann, _ = make_sample(SynthSettings(**{**base.__dict__, "crumple": strength}), 2)
        w, h = ann["image_size"]
        corners = np.array(ann["paper_corners"])
        assert (corners >= -1).all() and (corners[:, 0] <= w + 1).all() and (corners[:, 1] <= h + 1).all()
        assert ann["paper_corners"] == ann0["paper_corners"] and ann["labels"] == ann0["labels"]
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
