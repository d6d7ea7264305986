"""Which way up a page is, from its traces: the axis and the direction found on the synthesizer's pages at every
quarter turn, time read from the beats (a mirrored page reads backwards, a page flipped top to bottom does not), a
page without traces never sure, and the predictor standing a sure page upright."""
import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from utils.bench.page import plain_pages
from utils.core.labels import LABELS
from utils.ensemble.page import ecg_verdict
from utils.ensemble.predict import main as predict_main
from utils.ensemble.predictor import Predictor
from utils.preprocess.cache import prepare
from utils.preprocess.ink import ink_mask
from utils.preprocess.orient import ECG_BEATS, ECG_ROWS, banding, find_turn, shows_traces, upright
from utils.synth.generate import SynthSettings, make_sample


@pytest.fixture(scope="module")
def scans():
    """Eight of the synthesizer's scans, upright as drawn."""
    pages = []
    for i in range(8):
        jpeg, _, _ = make_sample(SynthSettings(style="scan", seed=11), i)
        pages.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    return pages


def turned(img, turn):
    return np.ascontiguousarray(np.rot90(img, turn // 90))


def test_upright_undoes_every_quarter_turn(scans):
    for turn in (0, 90, 180, 270):
        np.testing.assert_array_equal(upright(turned(scans[0], turn), turn), scans[0])


def test_the_turn_is_found_on_synthesized_pages_at_every_quarter_turn(scans):
    found = [(turn, find_turn(turned(img, turn), 3.0)) for img in scans for turn in (0, 90, 180, 270)]
    axis_right = [r["turn_found"] % 180 == turn % 180 for turn, r in found]
    right = [r["turn_found"] == turn for turn, r in found]
    sure = [(turn, r) for turn, r in found if r["sure"]]
    assert all(axis_right), "the traces' axis: rows on a standing page, columns on one turned by a quarter"
    assert np.mean(right) >= 0.7, f"{sum(right)} of {len(right)} turns found"  # chance: 0.5 once the axis is known
    assert sure and all(r["turn_found"] == turn for turn, r in sure), sure  # a sure turn is right
    assert all(r["beats"] >= 3 and r["axis_ratio"] > 1.0 for _, r in found)


def test_time_is_read_from_the_beats_not_from_which_way_the_spikes_point(scans):
    """Mirrored left to right, a page reads backwards (180); flipped top to bottom, every deflection changes sign and
    time runs on (0): the evidence is the T wave's place after the QRS, not its sign."""
    checked, backwards = 0, 0
    for img in scans:
        upright_reading = find_turn(img, 0.0)
        if upright_reading["turn_evidence"] < 1.0:
            continue
        checked += 1
        mirrored = find_turn(np.ascontiguousarray(img[:, ::-1]), 0.0)
        flipped = find_turn(np.ascontiguousarray(img[::-1]), 0.0)
        if mirrored["turn_found"] == (upright_reading["turn_found"] + 180) % 360:
            backwards += 1
            assert mirrored["turn_evidence"] == pytest.approx(upright_reading["turn_evidence"], rel=0.3)
        else:  # never sure the wrong way: what the check would take as evidence (1.0) is not there
            assert mirrored["turn_evidence"] < 1.0, mirrored
        assert flipped["turn_found"] == upright_reading["turn_found"]
    assert checked >= 4 and backwards >= 0.8 * checked, (backwards, checked)


def test_a_page_without_traces_is_never_sure():
    rng = np.random.default_rng(0)
    for img in (np.full((600, 800, 3), 255, np.uint8), rng.integers(0, 256, (600, 800, 3), dtype=np.uint8),
                np.zeros((600, 800, 3), np.uint8)):
        reading = find_turn(img, 3.0)
        assert not reading["sure"] and reading["turn_evidence"] < 3.0
    assert not ink_mask(np.full((300, 400, 3), 255, np.uint8)).any()


def test_the_ink_bands_along_the_traces(scans):
    rows, columns = banding(ink_mask(scans[1]))
    assert rows > 1.5 * columns
    rows_t, columns_t = banding(ink_mask(turned(scans[1], 90)))
    assert columns_t == pytest.approx(rows, rel=0.1) and rows_t == pytest.approx(columns, rel=0.1)


def with_orient(package, **orient):
    pkg = torch.load(package, weights_only=True)
    pkg["orient"] = orient
    path = package.parent / f"orient-{len(list(package.parent.glob('orient-*')))}.pt"
    torch.save(pkg, path)
    return path


def test_the_predictor_stands_a_sure_page_upright_and_says_so(package, scans, tmp_path):
    img = next(p for p in scans if find_turn(p, 0.0)["turn_evidence"] >= 3.0 and find_turn(p, 0.0)["turn_found"] == 0)
    upside_down = turned(img, 180)
    turning = Predictor(with_orient(package, turn_pages=True, turn_evidence=3.0))
    prepared, rec = turning.prepare(upside_down)
    assert rec["turn"] == 180 and rec["orient"]["sure"]
    np.testing.assert_array_equal(prepared, prepare(img, turning.prep)[0])
    still = Predictor(with_orient(package, turn_pages=False, turn_evidence=3.0))
    prepared, rec = still.prepare(upside_down)
    assert rec["turn"] == 0 and rec["orient"]["turn_found"] == 180  # found and reported, not acted on
    np.testing.assert_array_equal(prepared, prepare(upside_down, still.prep)[0])
    assert Predictor(package).orient["turn_pages"] is False  # a package that says nothing never turns

    cv2.imwrite(str(tmp_path / "upside-down.jpg"), upside_down)
    out = tmp_path / "rows.csv"
    assert predict_main(["--model", str(with_orient(package, turn_pages=True, turn_evidence=3.0)), "--images",
                         str(tmp_path / "upside-down.jpg"), "--out", str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["turned"] == 180 and row["turn_found"] == 180 and row["turn_evidence"] >= 3.0
    assert "turned back by 180 degrees to stand upright" in row["warning"]


def test_a_damaged_orient_entry_is_refused_on_load(package, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "one.png"), np.full((300, 400, 3), 255, np.uint8))
    for i, orient in enumerate(({"turn_pages": "yes", "turn_evidence": 3.0}, {"turn_pages": True},
                                {"turn_pages": True, "turn_evidence": -1.0},
                                {"turn_pages": True, "turn_evidence": 3.0, "gate": "maybe"})):
        model = with_orient(package, **orient)
        assert predict_main(["--model", str(model), "--images", str(tmp_path / "one.png"),
                             "--out", str(tmp_path / f"p{i}.csv")]) == 2
        err = capsys.readouterr().err
        assert "a damaged ensemble package: 'orient'" in err, err


def test_a_turn_the_traces_are_unsure_of_is_said_in_the_row_never_acted_on():
    from utils.ensemble.predict import page_columns

    page = {"ecg_score": 0.9, "is_ecg": True, "reader_turn": 180, "reader_turn_p": 0.97}
    unsure_180 = {"turn_found": 180, "turn_evidence": 1.4, "sure": False}
    cols, said = page_columns({"page": page, "orient": unsure_180, "turn": 0})
    assert cols["turned"] == 0 and cols["turn_found"] == 180
    assert said == ["the page may stand upside down (turned by 180 degrees; traces' evidence 1.4, not sure; the page "
                    "reader's head says 180 too (p 0.97)): read as it came"]
    _, said = page_columns({"page": {**page, "reader_turn": 0}, "orient": {**unsure_180, "turn_found": 90}, "turn": 0})
    assert said == ["the page may lie sideways (turned by 90 degrees; traces' evidence 1.4, not sure): read as it came"]
    upright_unsure = {"turn_found": 0, "turn_evidence": 0.8, "sure": False}
    _, said = page_columns({"page": page, "orient": upright_unsure, "turn": 0})
    assert said == ["which way up is unsure: the traces lean upright (evidence 0.8, not sure) where the page reader's "
                    "head says turned by 180 degrees (p 0.97): read as it came"]
    for quiet in ({**page, "reader_turn_p": 0.6}, {**page, "reader_turn": 0}):  # the head alone, unsure or upright
        assert page_columns({"page": quiet, "orient": upright_unsure, "turn": 0})[1] == []
    assert page_columns({"page": page, "orient": {**upright_unsure, "sure": True}, "turn": 0})[1] == []
    sure_off = {"turn_found": 270, "turn_evidence": 5.2, "sure": True}  # a package that does not turn pages
    assert "sure, but this package does not turn pages" in page_columns({"page": {}, "orient": sure_off, "turn": 0})[1][0]
    _, said = page_columns({"page": page, "orient": {**unsure_180, "sure": True, "turn_evidence": 4.0}, "turn": 180})
    assert said == ["turned back by 180 degrees to stand upright (traces' evidence 4.0)"]


PLAIN = plain_pages((700, 900), seed=3)  # white, black, grey and noise pages


def test_the_traces_show_an_ecg_on_every_turn_of_a_page_and_none_on_plain_pages(scans):
    for img in scans:
        for turn in (0, 90, 180, 270):
            found = find_turn(turned(img, turn), 3.0)
            assert found["rows"] >= ECG_ROWS and found["beats"] >= ECG_BEATS and shows_traces(found), (turn, found)
    for name, img in PLAIN.items():
        found = find_turn(img, 3.0)
        assert not shows_traces(found) and found["rows"] < ECG_ROWS, (name, found)


def test_each_gate_decides_as_it_says():
    ecg, none = {"rows": ECG_ROWS, "beats": ECG_BEATS}, {"rows": ECG_ROWS, "beats": ECG_BEATS - 1}
    reader_yes, reader_no = {"ecg_score": 0.9, "is_ecg": True}, {"ecg_score": 0.1, "is_ecg": False}
    verdicts = {gate: [ecg_verdict(r, t, gate)["is_ecg"] for r in (reader_yes, reader_no) for t in (ecg, none)]
                for gate in ("reader", "traces", "either", "both")}
    assert verdicts == {"reader": [True, True, False, False], "traces": [True, False, True, False],
                        "either": [True, True, True, False], "both": [True, False, False, False]}
    kept = ecg_verdict(reader_no, ecg, "either")
    assert kept["reader_ecg"] is False and kept["traces_ecg"] is True and kept["ecg_score"] == 0.1
    assert ecg_verdict({}, none, "reader") == {}  # no reader, and the reader decides: nothing is withheld
    assert ecg_verdict({}, none, "either") == {"traces_ecg": False, "is_ecg": False}  # no reader: the traces decide
    with pytest.raises(ValueError, match="ECG gate 'maybe': choose from reader, traces, either, both"):
        ecg_verdict({}, ecg, "maybe")


def test_blank_black_and_noise_pages_get_no_decisions_from_the_traces_gate(package, scans, tmp_path):
    """Through predict, a package whose traces decide (its own ECG_ROWS and ECG_BEATS, not numbers set for the test):
    plain pages keep their scores and lose their yes/no decisions, and the row says why; the synthesizer's pages keep
    theirs, turned or not."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for name, img in PLAIN.items():
        cv2.imwrite(str(pics / f"{name}.png"), img)
    cv2.imwrite(str(pics / "ecg.png"), scans[2])
    cv2.imwrite(str(pics / "ecg-sideways.png"), turned(scans[3], 90))
    out = tmp_path / "rows.csv"
    model = with_orient(package, turn_pages=False, turn_evidence=3.0, gate="traces")
    assert predict_main(["--model", str(model), "--images", str(pics), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("id")
    for name in PLAIN:
        row = table.loc[name]
        assert row["is_ecg"] == 0 and row["traces_ecg"] == 0 and 0 <= row["MI"] <= 1, name
        assert all(row[f"{k}_positive"] != row[f"{k}_positive"] for k in LABELS)  # empty: no decision
        assert f"not an ECG (traces: 0 row(s), 0 beats (an ECG shows {ECG_ROWS} and {ECG_BEATS} at least)): " \
               f"no yes/no decisions" in row["warning"], (name, row["warning"])
    for name in ("ecg", "ecg-sideways"):
        row = table.loc[name]
        assert row["is_ecg"] == 1 and row["traces_ecg"] == 1 and "not an ECG" not in str(row["warning"])
        assert all(row[f"{k}_positive"] in (0, 1) for k in LABELS)
