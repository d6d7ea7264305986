"""The decision-stability benchmark: its changes, its arithmetic, and a run through the predict path."""
import cv2
import numpy as np
import pandas as pd
import pytest

from utils.bench import stability
from utils.core.labels import LABELS
from utils.ensemble.predictor import Predictor


def test_the_changes_keep_the_picture_and_are_the_same_every_time():
    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
    made = stability.changes()
    assert list(made) == ["JPEG 75", "JPEG 85", "JPEG 95", "scale 0.9", "scale 1.1", "rotate -3 deg", "rotate -1 deg",
                          "rotate +1 deg", "rotate +3 deg"]
    assert made["scale 1.1"](image=img)["image"].shape == (330, 440, 3)
    assert made["rotate +3 deg"](image=img)["image"].shape == img.shape
    low, high = (np.abs(made[q](image=img)["image"].astype(int) - img).mean() for q in ("JPEG 75", "JPEG 95"))
    assert 0 < high < low  # a higher quality changes the picture less


def test_the_summary_counts_changes_and_flips_per_label():
    rows = pd.DataFrame([{"picture": f"p{i}", "change": "JPEG 75", "label": k, "p": 0.5, "p_changed": 0.5 + d,
                          "decision": 1, "decision_changed": int(0.5 + d >= 0.5)}
                         for i, d in enumerate((0.1, -0.2, 0.0, 0.3)) for k in LABELS])
    table = stability.summary(rows).set_index("label")
    assert table.loc["MI", "mean_abs_change"] == pytest.approx(0.15) and table.loc["MI", "flipped"] == 0.25
    assert table.loc["all", "pictures"] == 4 and table.loc["MI", "p95_abs_change"] == pytest.approx(0.285)
    assert list(stability.wide(stability.summary(rows), "flipped").columns) == ["change", *LABELS, "all"]


def test_a_run_through_the_predict_path_and_its_refusals(package, tmp_path, capsys):
    for i in range(2):
        img = np.full((300, 400, 3), 40, np.uint8)
        cv2.rectangle(img, (50, 40), (350, 260), (245, 245, 245), -1)
        cv2.line(img, (60, 100 + 30 * i), (340, 150), (20, 20, 20), 2)
        cv2.imwrite(str(tmp_path / f"p{i}.jpg"), img)
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    rows, skipped = stability.measure(Predictor(package), sorted(tmp_path.glob("*.jpg")))
    assert len(rows) == 2 * 9 * len(LABELS) and len(skipped) == 1 and "broken.jpg" in skipped[0]
    assert ((rows["p_changed"] - rows["p"]).abs() <= 1).all() and set(rows["decision"]) <= {0, 1}
    assert stability.main(["--model", str(package), "--run", str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "give --run (its test photos) or --images (a folder), one of them" in capsys.readouterr().err
    assert stability.main(["--model", str(package), "--run", str(tmp_path)]) == 2
    assert "no 01_assemble/manifest.csv" in capsys.readouterr().err
    assert stability.main(["--model", str(package), "--images", str(tmp_path), "--pictures", "3",
                           "--out", str(tmp_path / "out")]) == 0
    written = next((tmp_path / "out").glob("*/stability.md")).read_text()
    assert "share of decisions flipped" in written and "| rotate +3 deg" in written and "broken.jpg" in written
    assert "fold0.pt" not in written and ", 2 pictures" in written  # pictures only: the two photos read
