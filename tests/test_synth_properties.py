"""Statistical properties: no label in global image statistics, every label learnable from the signal."""
import numpy as np
import pytest

from utils.synth.checks import chance_band, learnability_check, shortcut_check
from utils.synth.generate import SynthSettings

TINY = dict(page_width=440, page_height=340, photo_max_side=520)


def test_chance_band_is_the_hanley_mcneil_error():
    y = np.array([1] * 50 + [0] * 150)
    assert chance_band(y, z=1) == pytest.approx(np.sqrt(201 / (12 * 50 * 150)))


@pytest.mark.slow
@pytest.mark.parametrize("style,flat", [("photo", False), ("scan", True)])
def test_global_image_statistics_do_not_predict_labels(style, flat):
    # Scans with their traces are excluded on purpose: there the ink of tall LVH complexes and fast AF rates is
    # the waveform itself, not a shortcut; drawing the traces flat isolates what style and artefacts could tell.
    table = shortcut_check(SynthSettings(style=style, **TINY), n=240, flat=flat)
    for row in table.itertuples():
        assert abs(row.auroc - 0.5) <= row.chance_band, f"{style}: {row.label} AUROC {row.auroc}"


@pytest.mark.slow
def test_every_label_is_learnable_from_simple_measurements():
    table = learnability_check(n=360)
    for row in table.itertuples():
        band = 3 * np.sqrt((360 + 1) / (12.0 * row.positives * (360 - row.positives)))
        assert row.auroc > 0.5 + band, f"{row.label}: AUROC {row.auroc} not above chance (+{band:.3f})"
