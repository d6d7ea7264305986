"""The signal reader: the page view it learns from, the one input transform, that it learns (above chance on new
simulated records), the blend chosen on out-of-fold scores, the package's 'signal' entry (used, and refused when
damaged), predict's new columns, and the saliency of step 06."""
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.labels import LABELS
from utils.core.metrics import auroc_table
from utils.digitise.reader import (WEIGHTS, blend, choose_weights, page_view, read_signals, reader_input,
                                   training_set, train_reader)
from utils.ensemble.predict import main as predict_main
from utils.ensemble.predictor import Predictor
from utils.gradcam.signal import signal_report
from utils.synth.generate import SynthSettings, make_sample
from utils.synth.realism import simulated_set
from utils.synth.waveform import LEADS


def test_the_page_view_shows_each_lead_for_its_panel_and_the_rhythm_lead_throughout():
    x = np.arange(12 * 1000, dtype=np.float32).reshape(12, 1000)
    view = page_view(x, "V1")
    shown = np.isfinite(view)
    assert shown[LEADS.index("V1")].all() and shown.sum() == 11 * 250 + 1000
    assert shown[LEADS.index("aVR"), 250:500].all() and not shown[LEADS.index("aVR"), :250].any()
    assert shown[LEADS.index("V6"), 750:].all() and np.array_equal(view[shown], x[shown])
    assert np.isfinite(page_view(x, "")).sum() == 12 * 250


def test_the_input_takes_each_panels_median_and_reads_gaps_as_zero():
    x = np.full((12, 1000), np.nan, np.float32)
    x[0, :250] = 2.0
    x[0, 300:310] = np.linspace(9, 10, 10)   # a second stretch, after a gap: its own median
    x[1] = np.r_[np.zeros(500), np.ones(500)] + 1.0
    out = reader_input(x)
    assert out.dtype == np.float32 and out.shape == (12, 1000)
    assert np.allclose(out[0, :250], 0) and np.abs(out[0, 300:310]).max() <= 0.5 and np.allclose(out[2:], 0)
    assert np.allclose(out[1], np.r_[np.full(500, -0.5), np.full(500, 0.5)])
    assert np.allclose(reader_input(np.full((12, 1000), 9.0)), 0)
    assert reader_input(np.r_[np.zeros((11, 1000)), [np.r_[np.zeros(500), np.full(500, 40.0)]]])[11].max() == 5


def test_the_reader_learns_the_labels_from_page_views():
    torch.set_num_threads(1)
    data = training_set(40, 5)
    assert data.x.shape == (40, 12, 1000) and np.isfinite(data.x).all()
    model = train_reader(600, 4, 0)
    new = simulated_set(300, 99)
    views = np.stack([page_view(x) for x in new.x])
    macro, per = auroc_table(new.y, read_signals(model, views), warn=False)
    assert macro >= 0.7, per  # chance is 0.5


def test_the_blend_is_chosen_on_out_of_fold_scores():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 5)) < 0.3).astype(float)
    image = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.25, y.shape), 0.01, 0.99)
    telling = np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.15, y.shape), 0.01, 0.99)
    noise = rng.random(y.shape)
    weights, rows = choose_weights(image, telling, y)
    assert all(w >= 0.4 for w in weights) and len(rows) == len(WEIGHTS) * 5
    weights, _ = choose_weights(image, noise, y)
    assert all(w <= 0.2 for w in weights), weights
    unread = np.full_like(noise, np.nan)
    assert np.allclose(blend(image, unread, [0.7] * 5), image)
    assert np.allclose(blend(image, telling, [0.0] * 5), image)
    assert np.allclose(blend(image, telling, [1.0] * 5), telling)


def photo(path, index=0, style="scan"):
    jpeg, _, _ = make_sample(SynthSettings(style=style, seed=3, page_width=1100, page_height=850), index)
    path.write_bytes(jpeg)
    return path


def test_predict_gives_each_readers_scores_and_the_digitisers_note(signal_package, tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    photo(pics / "page.jpg")
    cv2.imwrite(str(pics / "blank.jpg"), np.full((600, 800, 3), 250, np.uint8))
    out = tmp_path / "preds.csv"
    assert predict_main(["--model", str(signal_package), "--images", str(pics), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("id")
    assert table.loc["page", "digitised"].startswith("3x4")
    for prefix in ("", "image_", "signal_"):
        assert table.loc["page", [f"{prefix}{k}" for k in LABELS]].astype(float).between(0, 1).all()
    assert table.loc["blank", [f"signal_{k}" for k in LABELS]].isna().all()
    assert "not digitised: no trace ink found: the image model alone" in table.loc["blank", "warning"]
    np.testing.assert_allclose(table.loc["blank", list(LABELS)].to_numpy(float),
                               table.loc["blank", [f"image_{k}" for k in LABELS]].to_numpy(float), atol=1e-6)
    pred = Predictor(signal_package)
    reading = pred.read_one(pics / "page.jpg")
    scores, _ = pred.verdict(reading)
    np.testing.assert_allclose(table.loc["page", list(LABELS)].to_numpy(float), scores, atol=1e-6)


def test_a_damaged_signal_entry_is_refused_naming_it(signal_package, tmp_path, capsys):
    pkg = torch.load(signal_package, weights_only=True)
    photo(tmp_path / "one.jpg")
    for i, bad in enumerate([{**pkg["signal"], "blend": [0.5] * 4}, {**pkg["signal"], "format": "other"}]):
        path = tmp_path / f"bad{i}.pt"
        torch.save({**pkg, "signal": bad}, path)
        assert predict_main(["--model", str(path), "--images", str(tmp_path / "one.jpg"), "--out",
                             str(tmp_path / f"p{i}.csv")]) == 2
        err = capsys.readouterr().err
        assert "a damaged ensemble package" in err and "'signal'" in err, err


def test_step_06_shows_which_lead_and_seconds_drove_the_signal_reader(signal_package, tmp_path):
    rows = pd.DataFrame({"id": ["a", "b"], "image": [str(photo(tmp_path / f"{k}.jpg", k)) for k in range(2)]})
    summary, figure = signal_report(Predictor(signal_package), rows, tmp_path)
    drivers = pd.read_csv(tmp_path / "signal_drivers.csv")
    assert figure == tmp_path / "signal_saliency.png" and figure.stat().st_size > 10_000
    read = drivers[drivers["label"].notna()]
    assert set(read["label"]) == set(LABELS) and read["lead"].isin(LEADS).all()
    assert read["lead_share"].between(0, 1).all() and ((read["to_s"] - read["from_s"]).round(2) == 1.0).all()
    assert list(summary["label"]) == list(LABELS)
    summary, figure = signal_report(Predictor(signal_package.parent / "model.pt"), rows, tmp_path / "none")
    assert figure is None and "no signal reader" in summary


def test_out_of_fold_pictures_that_cannot_be_read_are_listed_and_give_no_signal(tmp_path):
    from utils.ensemble.signal import digitise_files

    good = photo(tmp_path / "good.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a whole JPEG")
    paths = [str(good), str(broken), str(tmp_path / "missing.jpg")]
    signals, problems = digitise_files(paths, 3.0, tmp_path / "oof.npz", workers=1)
    assert signals.shape == (3, 12, 1000) and problems[0] == ""
    assert np.isfinite(signals[0]).any() and np.isnan(signals[1:]).all()
    assert "broken.jpg" in problems[1] or "corrupt" in problems[1] or "truncated" in problems[1], problems[1]
    assert problems[2], problems[2]
    again, kept = digitise_files(paths, 3.0, tmp_path / "oof.npz", workers=1)  # read back, not digitised again
    assert kept == problems and np.array_equal(np.isnan(again), np.isnan(signals))


def test_pictures_prepared_in_worker_processes_read_as_they_do_here_in_order(signal_package, tmp_path):
    from utils.ensemble.predictor import POOL_FROM

    paths = []
    for i in range(POOL_FROM + 1):
        jpeg, _, _ = make_sample(SynthSettings(style="scan", seed=5, page_width=660, page_height=510), i)
        paths.append(tmp_path / f"{i:02d}.jpg")
        paths[-1].write_bytes(jpeg)
    paths.insert(7, tmp_path / "cut.jpg")
    paths[7].write_bytes(paths[0].read_bytes()[:300])  # a cut file: its error at its own place
    pred = Predictor(signal_package)
    here = list(pred.read(paths, batch_size=4, workers=1))
    pooled = list(pred.read(paths, batch_size=4, workers=2))
    assert [r.index for r in pooled] == list(range(len(paths)))
    assert "truncated" in pooled[7].error and pooled[7].fold_probs is None and here[7].error == pooled[7].error
    for a, b in zip(here, pooled):
        if a.error:
            continue
        np.testing.assert_allclose(b.fold_probs, a.fold_probs, atol=1e-6)
        np.testing.assert_allclose(b.signal_probs, a.signal_probs, atol=1e-5)
        assert b.rec["digitised"].note() == a.rec["digitised"].note() and b.rec["window"] == a.rec["window"]
        assert b.seconds > 0 and a.seconds > 0
    assert sum(r.rec["digitised"].read for r in pooled if not r.error) >= POOL_FROM // 2  # pages that were read


def test_a_prediction_finds_the_ink_and_the_sheet_once_and_reads_as_each_stage_alone(signal_package, tmp_path,
                                                                                     monkeypatch):
    from collections import Counter

    from utils.digitise import trace
    from utils.digitise.trace import digitise_turned
    from utils.preprocess import cache, ink, orient, roi, seen
    from utils.preprocess.cache import prepare
    from utils.preprocess.orient import find_turn

    img = cv2.imread(str(photo(tmp_path / "page.jpg", 1, "photo")))
    pkg = torch.load(signal_package, weights_only=True)
    pkg["prep"]["crop_to"] = "traces"  # the crop reads the traces' ink, as the profiles' packages do
    torch.save(pkg, tmp_path / "traces.pt")
    pred = Predictor(tmp_path / "traces.pt")
    alone_orient = find_turn(img, pred.orient["turn_evidence"])
    alone, alone_rec = prepare(img, pred.prep)
    alone_read = digitise_turned(img, alone_orient)[0]
    calls = Counter()

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name + (" relative" if kwargs.get("relative") else "")] += 1
            return fn(*args, **kwargs)
        return call

    ink_call, sheet_call = counted("ink", ink.ink_mask), counted("sheet", roi.classical_detect)
    for module in (ink, orient, seen, trace):
        monkeypatch.setattr(module, "ink_mask", ink_call)
    for module in (cache, trace, seen):
        monkeypatch.setattr(module, "classical_detect", sheet_call)
    prepared, rec = pred.prepare(img)
    # the turn and the crop share one ink mask, the crop and the digitiser one sheet; the digitiser's own ink is the
    # flattened sheet's, a different picture
    assert calls == {"ink": 1, "sheet": 1, "ink relative": 1}, calls
    assert rec["orient"] == alone_orient and rec["turn"] == 0
    np.testing.assert_array_equal(prepared, alone)
    assert rec["window"] == alone_rec["window"] and rec["method"] == alone_rec["method"] == "classical+traces"
    assert rec["digitised"].read and rec["digitised"].rectified
    np.testing.assert_array_equal(rec["digitised"].signals, alone_read.signals)


def test_the_reencoding_noise_is_measured_kept_in_the_package_and_said_in_the_row(signal_package, tmp_path):
    from utils.ensemble.noise import VARIANTS, reencoding_noise, variant
    from utils.ensemble.predictor import PackageError, add_to_package

    pages = [photo(tmp_path / f"p{i}.jpg", i, "photo") for i in range(2)]
    (tmp_path / "cut.jpg").write_bytes(pages[0].read_bytes()[:200])
    img = cv2.imread(str(pages[0]))
    copies = {v: variant(img, v) for v in VARIANTS}
    assert copies["scaled 0.9"].shape == (round(img.shape[0] * 0.9), round(img.shape[1] * 0.9), 3)
    for v in ("jpeg q75", "webp q80", "cmyk jpeg q90"):
        assert copies[v].shape == img.shape and 0 < np.abs(copies[v].astype(int) - img).mean() < 8, v

    pred = Predictor(signal_package)
    entry, table = reencoding_noise(pred, pages + [tmp_path / "cut.jpg"])
    assert entry["pictures"] == 2 and entry["left_out"] == 1 and entry["variants"] == list(VARIANTS)
    assert len(entry["band"]) == 5 and all(b >= 0 for b in entry["band"])
    assert table["decisions_flipped"].str.endswith(f"of {2 * len(VARIANTS)}").all()
    reading = pred.read_one(pages[0])
    margins = pred.margins(reading.fold_probs[:, None], reading.signal_probs[None])[0]
    np.testing.assert_array_equal(margins >= 0, pred.verdict(reading)[1].astype(bool))  # one rule for yes/no

    with pytest.raises(PackageError, match="'noise'"):
        add_to_package(signal_package, "noise", {**entry, "band": entry["band"][:4]})
    rows = {}
    for name, band in (("wide", [1.0] * 5), ("none", [0.0] * 5)):
        model = tmp_path / f"{name}.pt"
        model.write_bytes(signal_package.read_bytes())
        add_to_package(model, "noise", {**entry, "band": band})
        assert Predictor(model).noise["band"] == band
        out = tmp_path / f"{name}.csv"
        assert predict_main(["--model", str(model), "--images", str(pages[0]), "--out", str(out)]) == 0
        rows[name] = pd.read_csv(out, keep_default_na=False).iloc[0]
    assert rows["wide"]["near_threshold"] == ",".join(LABELS)
    assert f"{', '.join(LABELS)}: decided within the re-encoding noise" in rows["wide"]["warning"]
    assert rows["none"]["near_threshold"] == "" and "re-encoding noise" not in rows["none"]["warning"]


def test_the_image_model_alone_reads_without_digitising_and_gives_the_same_probabilities(signal_package, tmp_path):
    """predict_rows (step 05's style table, step 07's robustness) needs the image model's probabilities only: nothing
    is digitised, and they are those of a full reading."""
    from utils.ensemble.evaluate import predict_rows, read_rows

    rows = pd.DataFrame({"id": ["a", "b"], "image": [str(photo(tmp_path / f"{k}.jpg", k)) for k in range(2)]})
    pred = Predictor(signal_package)
    full, signal, notes, _ = read_rows(pred, rows)
    alone = list(pred.read(rows["image"].tolist(), signal=False))
    assert all(r.signal_probs is None and "digitised" not in r.rec for r in alone)
    assert signal is not None and np.isfinite(signal).all() and all(notes)
    np.testing.assert_allclose(np.stack([r.fold_probs for r in alone], 1), full, atol=1e-6)
    probs, problems = predict_rows(pred, rows)
    np.testing.assert_allclose(probs, full, atol=1e-6)
    assert problems == []
