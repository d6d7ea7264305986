"""Step 05 and the predict command: voting rules, calibration, submission checks, the package, bad files."""
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.imageio import read_image
from utils.core.labels import LABELS as THE_LABELS
from utils.core.metrics import bootstrap_auroc
from utils.ensemble.predictor import Predictor
from utils.ensemble.predict import main as predict_main
from utils.ensemble.submission import SubmissionError, submission_ids, write_submission
from utils.ensemble.vote import apply_temperature, combine, ece, f1_thresholds, fit_temperature

LABELS = list(THE_LABELS)  # a list: pandas reads a tuple as one key


def test_voting_rules_on_hand_made_inputs():
    a = np.array([[0.9, 0.2, 0.6, 0.1, 0.4], [0.4, 0.7, 0.5, 0.3, 0.6]])
    b = np.array([[0.7, 0.4, 0.2, 0.2, 0.8], [0.2, 0.9, 0.4, 0.6, 0.5]])
    np.testing.assert_allclose(combine([a, b], "soft"), (a + b) / 2)
    np.testing.assert_allclose(combine([a, b], "hard"), [[1, 0, 0.5, 0, 0.5], [0, 1, 0.5, 0.5, 1]])
    np.testing.assert_allclose(combine([a, b], "rank"), [[1, 0.5, 0.75, 0.5, 0.75], [0.5, 1, 0.75, 1, 0.75]])
    with pytest.raises(ValueError, match="unknown voting rule 'majority'"):
        combine([a], "majority")


def test_hard_voting_leaves_few_distinct_scores():
    rng = np.random.default_rng(0)
    folds = [rng.random((200, 5)) for _ in range(5)]
    assert len(np.unique(combine(folds, "hard")[:, 0])) <= 6
    assert len(np.unique(combine(folds, "soft")[:, 0])) == 200


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(float)
    over = 1 / (1 + np.exp(-3 * z))  # overconfident by a factor 3
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.06)
    fixed = apply_temperature(over, t)
    assert ece(fixed, y) < 0.3 * ece(over, y)


def test_f1_thresholds_and_bootstrap():
    y = np.array([[0, 0, 1, 1, 1]] * 5).T.astype(float)
    p = np.array([[0.1, 0.3, 0.35, 0.8, 0.9]] * 5).T
    assert f1_thresholds(p, y) == [0.35] * 5
    ci = bootstrap_auroc(y, p, n=200, seed=0)
    assert ci["macro"][0] == 1.0 and ci["MI"][1] <= 1.0


def test_submission_follows_the_sample_and_is_checked(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("ECG_ID,mi,af,hyp,cd,sttc\nb,0,0,0,0,0\na,0,0,0,0,0\n")
    probs = np.array([[0.1] * 5, [0.9] * 5])
    out = write_submission(tmp_path / "sub.csv", ["a", "b"], probs, sample)
    assert list(out.columns) == ["ECG_ID", "mi", "af", "hyp", "cd", "sttc"] and list(out["ECG_ID"]) == ["b", "a"]
    assert out.iloc[0, 1] == 0.9
    with pytest.raises(SubmissionError, match="exists: nothing is overwritten"):
        write_submission(tmp_path / "sub.csv", ["a", "b"], probs, sample)
    with pytest.raises(SubmissionError, match="1 missing, 1 extra"):
        write_submission(tmp_path / "s2.csv", ["a", "c"], probs, sample)
    with pytest.raises(SubmissionError, match="1 row"):
        write_submission(tmp_path / "s3.csv", ["a", "b"], np.array([[0.1] * 5, [np.nan] * 5]), sample)
    with pytest.raises(SubmissionError, match="outside"):
        write_submission(tmp_path / "s4.csv", ["a", "b"], probs * 2, None)
    assert not (tmp_path / "s2.csv").exists()
    rows = pd.DataFrame({"id": ["competition:x1", "synth_photo:000600"], "submission_id": ["x1.png", np.nan]})
    assert submission_ids(rows) == ["x1.png", "000600"]


def test_package_is_weights_only_and_predict_handles_bad_files(package, tmp_path):
    pkg = torch.load(package, weights_only=True)
    assert pkg["backbone"] == "test_convnext" and len(pkg["folds"]) == 2 and pkg["temperatures"] == [1.5] * 5
    pics = tmp_path / "pics"
    pics.mkdir()
    img = np.full((300, 400, 3), 40, np.uint8)
    cv2.rectangle(img, (50, 40), (350, 260), (245, 245, 245), -1)
    cv2.imwrite(str(pics / "ok.jpg"), img)
    (pics / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (pics / "notes.txt").write_text("not a picture")
    out = tmp_path / "preds.csv"
    assert predict_main(["--model", str(package), "--images", str(pics), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("id")
    assert table.loc["ok", "error"] != table.loc["ok", "error"]  # NaN: no error
    assert 0 <= table.loc["ok", "MI"] <= 1 and table.loc["ok", "roi_method"] == "classical"
    assert "truncated or corrupt image data" in table.loc["broken", "error"]
    assert "notes" not in table.index  # a side file: listed once as skipped, no row
    assert predict_main(["--model", str(package), "--images", str(pics), "--out", str(out)]) == 2  # no overwrite
    # the command reproduces the library's probabilities for the same picture
    pred = Predictor(package)
    probs, _ = pred.verdict(pred.read_one(pics / "ok.jpg"))
    np.testing.assert_allclose(table.loc["ok", LABELS].to_numpy(float), probs, atol=1e-6)


def test_predict_writes_gradcam_overlays(package, tmp_path):
    img = np.full((300, 400, 3), 40, np.uint8)
    cv2.rectangle(img, (50, 40), (350, 260), (245, 245, 245), -1)
    cv2.imwrite(str(tmp_path / "one.jpg"), img)
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "one.jpg"), "--out",
                         str(tmp_path / "p.csv"), "--gradcam", str(tmp_path / "cam")]) == 0
    top = pd.read_csv(tmp_path / "p.csv").loc[0, LABELS].astype(float).idxmax()
    written = sorted(p.name for p in (tmp_path / "cam").iterdir())
    assert written == [f"one_{top}.jpg"]  # the most probable label, on the original photo
    assert cv2.imread(str(tmp_path / "cam" / written[0])).shape == (300, 400, 3)
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "one.jpg"), "--out",
                         str(tmp_path / "q.csv"), "--gradcam", str(tmp_path / "cam2"), "--gradcam-labels", "AF,MI",
                         "--cam-method", "layercam"]) == 0
    assert sorted(p.name for p in (tmp_path / "cam2").iterdir()) == ["one_AF.jpg", "one_MI.jpg"]


def test_predict_refuses_unknown_cam_labels_and_methods_before_any_picture(package, tmp_path, capsys):
    args = ["--model", str(package), "--images", str(tmp_path), "--out", str(tmp_path / "p.csv"), "--gradcam",
            str(tmp_path / "cam")]
    assert predict_main(args + ["--gradcam-labels", "MI,STEMI"]) == 2
    assert "--gradcam-labels STEMI: not a label; choose from MI, AF, HYP, CD, STTC" in capsys.readouterr().err
    assert predict_main(args + ["--cam-method", "scorecam"]) == 2
    assert "--cam-method 'scorecam': choose from gradcam" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "cam").exists()


def test_unknown_labels_are_left_out_never_counted_negative():
    from utils.core.metrics import auroc_row, bootstrap_table

    y = np.array([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1], [1, 0, 1, 1, 0], [0, 1, 0, 0, 1]] * 5, float)
    p = y * 0.6 + 0.2
    y_unknown = y.copy()
    y_unknown[::4, 0] = np.nan  # MI unknown on a quarter of the rows: were they negatives, MI would not be perfect
    p_bad = p.copy()
    p_bad[::4, 0] = 0.99
    assert auroc_row(y_unknown, p_bad)["MI"] == 1.0
    ci = bootstrap_auroc(y_unknown, p_bad, n=50, seed=1)
    assert ci["MI"] == (1.0, 1.0, 1.0) and ci["macro"][0] == 1.0
    table = bootstrap_table(y_unknown, p_bad, n=50, seed=1).set_index("label")
    assert table.loc["MI", "auroc"] == 1.0 and list(table.index) == [*LABELS, "macro"]


def test_paired_bootstrap_is_the_difference_of_the_same_resamples():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 5)) < 0.4).astype(float)
    good = np.clip(y * 0.5 + rng.random((120, 5)) * 0.6, 0, 1)
    bad = rng.random((120, 5))
    plain_good, plain_bad = bootstrap_auroc(y, good, n=0)["macro"][0], bootstrap_auroc(y, bad, n=0)["macro"][0]
    point, lo, hi = bootstrap_auroc(y, good, n=200, seed=3, baseline=bad)["macro"]
    assert point == pytest.approx(plain_good - plain_bad) and 0 < lo <= point <= hi
    assert bootstrap_auroc(y, good, n=200, seed=3, baseline=good)["macro"] == (0.0, 0.0, 0.0)


def test_thresholds_are_fitted_on_the_calibrated_scores_they_are_applied_to():
    from utils.ensemble.vote import Calibration, fit_calibration, vote_scores

    rng = np.random.default_rng(2)
    y = (rng.random((300, 5)) < 0.3).astype(float)
    p = np.clip(0.5 + (y - 0.5) * 0.5 + rng.normal(0, 0.2, y.shape), 0.01, 0.99) ** 2  # miscalibrated on purpose
    calibration, table, calibrated = fit_calibration(p, y)
    np.testing.assert_allclose(calibrated, apply_temperature(p, calibration.temperatures))
    assert list(table["threshold"]) == pytest.approx(list(calibration.thresholds), abs=1e-4)
    assert calibration.thresholds == tuple(f1_thresholds(calibrated, y))
    # one model: the soft vote is the calibrated probability, and the decisions use the same thresholds
    np.testing.assert_allclose(vote_scores(p[None], "soft", calibration), calibrated)
    assert (calibration.decide(calibrated) == (calibrated >= np.array(calibration.thresholds))).all()
    # hard and rank votes are never passed through a temperature
    np.testing.assert_array_equal(vote_scores(p[None], "hard", calibration), combine([p], "hard"))
    assert Calibration().thresholds == (0.5,) * 5


def test_one_picture_gives_the_same_tensor_in_training_and_serving(package, tmp_path):
    """Original picture -> step 02's cache -> training dataset, and original -> the packaged predictor: one input."""
    from utils.preprocess.cache import build_cache
    from utils.train.dataset import CachedImages, ModelInput

    img = np.full((420, 560, 3), 60, np.uint8)
    cv2.rectangle(img, (60, 50), (500, 370), (235, 240, 245), -1)
    cv2.line(img, (80, 200), (480, 180), (20, 20, 20), 3)
    cv2.imwrite(str(tmp_path / "one.png"), img)
    pred = Predictor(package)
    table = build_cache(pd.DataFrame({"id": ["one"], "image": [str(tmp_path / "one.png")]}), pred.prep,
                        tmp_path / "cache", workers=1, progress=False)
    pkg = pred.pkg
    ds = CachedImages(table.assign(**{k: 0.0 for k in LABELS}),
                      ModelInput(pkg["image_size"], pkg["mean"], pkg["std"], pkg["input_channels"]))
    trained = ds[0][0]
    served = pred.tensor(pred.prepare(read_image(tmp_path / "one.png").image)[0])[0]
    assert trained.shape == served.shape == (3, 64, 96)
    # the same steps; only the cache's JPEG encoding (quality 95) lies between them
    assert float((trained - served).abs().mean()) < 0.02
    assert float((trained - served).abs().max()) < 0.5


def test_batched_prediction_equals_one_picture_at_a_time(package, tmp_path):
    from utils.ensemble.evaluate import predict_rows

    rows = []
    for i in range(5):
        img = np.full((300, 400, 3), 40 + 10 * i, np.uint8)
        cv2.rectangle(img, (50 + i, 40), (350, 260 - i), (245, 245, 245), -1)
        cv2.imwrite(str(tmp_path / f"p{i}.jpg"), img)
        rows.append({"id": f"p{i}", "image": str(tmp_path / f"p{i}.jpg")})
    rows.append({"id": "gone", "image": str(tmp_path / "gone.jpg")})
    pred = Predictor(package)
    batched, problems = predict_rows(pred, pd.DataFrame(rows), batch_size=2)
    single = np.stack([np.stack(pred.fold_probs(pred.tensor(pred.prepare(read_image(r["image"]).image)[0])))[:, 0]
                       for r in rows[:5]], axis=1)
    np.testing.assert_allclose(batched[:, :5], single, atol=1e-5)
    assert np.isnan(batched[:, 5]).all() and [p["id"] for p in problems] == ["gone"]
    with_tta, _ = predict_rows(pred, pd.DataFrame(rows[:2]), tta=True, batch_size=3)
    assert with_tta.shape == (2, 2, 5) and np.isfinite(with_tta).all()


def _page(path):
    img = np.full((300, 400, 3), 40, np.uint8)
    cv2.rectangle(img, (50, 40), (350, 260), (245, 245, 245), -1)
    cv2.imwrite(str(path), img)


def test_predict_checks_its_output_door_before_any_work(package, tmp_path, capsys):
    from utils.ensemble.predict import open_output

    empty, named = tmp_path / "empty", tmp_path / "x.jpg"
    empty.mkdir()
    named.mkdir()  # a folder named like a picture
    for target in (empty, named):
        assert predict_main(["--model", str(package), "--images", str(target), "--out", str(tmp_path / "p.csv")]) == 2
        assert "a folder with no pictures in it" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists() and not list(tmp_path.glob(".p.csv.lock"))  # nothing left behind
    _page(tmp_path / "one.jpg")
    (tmp_path / "plain").write_text("a file, not a folder")
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "one.jpg"), "--out",
                         str(tmp_path / "plain" / "p.csv")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    # a folder nobody may write in, root included (sysfs refuses new files), as /kaggle/input refuses (read-only)
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "one.jpg"), "--out", "/sys/p.csv"]) == 2
    said = capsys.readouterr()
    assert "--out /sys/p.csv: the folder /sys is not writable (Permission denied)" in said.err, said.err
    assert "one.jpg" not in said.out  # refused before any picture was read
    lock = open_output(tmp_path / "q.csv")  # another predict is writing q.csv
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "one.jpg"), "--out",
                         str(tmp_path / "q.csv")]) == 2
    assert "another predict is writing it" in capsys.readouterr().err and not (tmp_path / "q.csv").exists()
    lock.unlink()
    assert predict_main(["--model", str(package), "--images", str(tmp_path / "one.jpg"), "--out",
                         str(tmp_path / "q.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "q.csv")) == 1 and not lock.exists()


def test_a_damaged_package_is_refused_on_load_naming_what_is_wrong(package, tmp_path, capsys):
    pkg = torch.load(package, weights_only=True)
    _page(tmp_path / "one.jpg")
    cases = {"no 'thresholds'": {k: v for k, v in pkg.items() if k != "thresholds"},
             "'thresholds' has 4 values, not one per label (5)": {**pkg, "thresholds": [0.5] * 4},
             "no 'prep'": {k: v for k, v in pkg.items() if k != "prep"},
             "'image_size' [64] is not [height, width]": {**pkg, "image_size": [64]}}
    for i, (message, bad) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.pt"
        torch.save(bad, path)
        assert predict_main(["--model", str(path), "--images", str(tmp_path / "one.jpg"), "--out",
                             str(tmp_path / f"p{i}.csv")]) == 2
        err = capsys.readouterr().err
        assert "a damaged ensemble package" in err and message in err, err


def test_same_names_links_and_pages_are_said_plainly(package, tmp_path):
    from PIL import Image

    pics = tmp_path / "pics"
    (pics / "a").mkdir(parents=True)
    (pics / "b").mkdir()
    _page(pics / "a" / "page.jpg")
    _page(pics / "b" / "page.png")
    (pics / "gone.jpg").symlink_to(pics / "nowhere.jpg")
    frames = [Image.fromarray(np.full((300, 400, 3), v, np.uint8)) for v in (200, 90)]
    frames[0].save(pics / "two.tif", save_all=True, append_images=frames[1:])
    out = tmp_path / "p.csv"
    assert predict_main(["--model", str(package), "--images", str(pics), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"id": str}).set_index("id")
    assert {"a/page.jpg", "b/page.png", "gone", "two"} == set(table.index)
    assert "2 files are named 'page': this row's id is its path" in table.loc["a/page.jpg", "warning"]
    assert "a link to" in table.loc["gone", "error"]
    assert "which does not exist (a dangling link)" in table.loc["gone", "error"]
    assert "2 pages (TIFF): the first is read, the other 1 ignored" in table.loc["two", "warning"]
