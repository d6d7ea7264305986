"""The simulator: lead identities, shapes, determinism, and each label visible by its clinical criteria."""
import numpy as np
import pytest

from utils.core.labels import LABELS
from utils.synth.labels import PREVALENCE, correlation_matrix, sample_labels
from utils.synth.measure import measure
from utils.synth.waveform import LEADS, simulate

COMBOS = [{}, {"MI": 1}, {"AF": 1}, {"HYP": 1}, {"CD": 1}, {"STTC": 1}, {"MI": 1, "CD": 1, "STTC": 1, "AF": 1}]


@pytest.mark.parametrize("labels", COMBOS)
@pytest.mark.parametrize("fs", [500, 100])
def test_limb_lead_identities_hold_exactly(labels, fs):
    s = simulate(labels, np.random.default_rng(3), fs=fs).signals.astype(np.float64)
    i, ii, iii, avr, avl, avf = (s[LEADS.index(n)] for n in ("I", "II", "III", "aVR", "aVL", "aVF"))
    assert s.shape == (12, 10 * fs) and np.isfinite(s).all()
    for got, want in ((iii, ii - i), (avr, -(i + ii) / 2), (avl, i - ii / 2), (avf, ii - i / 2)):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_same_seed_same_record_and_other_seed_differs():
    a = simulate({"MI": 1}, np.random.default_rng(5)).signals
    b = simulate({"MI": 1}, np.random.default_rng(5)).signals
    c = simulate({"MI": 1}, np.random.default_rng(6)).signals
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _features(labels, n=40, seed0=0):
    return [measure(simulate(labels, np.random.default_rng(seed0 + k)).signals) for k in range(n)]


def _median(rows, key):
    return float(np.nanmedian([r[key] for r in rows]))


def test_af_is_irregular_without_p_waves_and_sinus_is_regular():
    af, sinus = _features({"AF": 1}), _features({})
    assert _median(af, "rr_cv") > 3 * _median(sinus, "rr_cv")
    assert _median(af, "rr_cv") > 0.1
    assert abs(_median(af, "p_amp_II")) < abs(_median(sinus, "p_amp_II"))


def test_conduction_and_hypertrophy_show_their_criteria():
    cd, norm, hyp = _features({"CD": 1}, 60), _features({}, 60), _features({"HYP": 1}, 60)
    wide = np.mean([r["qrs_ms"] > 100 for r in cd]), np.mean([r["qrs_ms"] > 100 for r in norm])
    assert wide[0] > wide[1] + 0.08  # PTB-XL by this measure (ptbxl-more): 16% of CD records against 1% of normals
    assert _median(hyp, "sokolow_mv") > 1.3 * _median(norm, "sokolow_mv")


def test_record_metadata_follows_the_findings():
    for seed in range(30):
        rec = simulate({"CD": 1}, np.random.default_rng(seed))
        if "CD:RBBB" in rec.findings or "CD:LBBB" in rec.findings:
            assert rec.meta["qrs_ms"] >= 115
        if "CD:1AVB" in rec.findings:
            assert rec.meta["pr_ms"] > 200
    af = simulate({"AF": 1}, np.random.default_rng(1))
    assert af.meta["rhythm"] == "af" and af.findings[0].startswith("AF:")
    assert simulate({}, np.random.default_rng(1)).findings == ["NORM"]


def test_label_sampling_matches_prevalence_and_overlaps():
    rng = np.random.default_rng(0)
    y = np.array([list(sample_labels(rng).values()) for _ in range(4000)])
    for j, k in enumerate(LABELS):
        assert abs(y[:, j].mean() - PREVALENCE[k]) < 0.025, k
    corr = np.corrcoef(y.T)
    assert corr[LABELS.index("HYP"), LABELS.index("STTC")] > 0.1
    assert corr[LABELS.index("MI"), LABELS.index("CD")] > 0.05
    with pytest.raises(ValueError, match=r"unknown label\(s\) in prevalence: \['NORM'\]"):
        sample_labels(rng, {"NORM": 0.3})
    with pytest.raises(ValueError, match="not form a valid correlation"):
        correlation_matrix({("MI", "AF"): 0.99, ("MI", "CD"): 0.99, ("AF", "CD"): -0.99})


def test_per_lead_measures_agree_with_the_summary_ones():
    """LEAD_FEATURES come from the same median beat: the summary measures are their maxima, minima and sums."""
    from utils.synth.measure import FEATURES, LEAD_FEATURES

    m = measure(simulate({"HYP": 1, "STTC": 1}, np.random.default_rng(11)).signals)
    assert list(m) == list(FEATURES + LEAD_FEATURES) and len(LEAD_FEATURES) == 4 * 12
    per = {kind: np.array([m[f"{kind}_{lead}"] for lead in LEADS]) for kind in ("st", "t", "r", "s")}
    assert m["st_max_mv"] == per["st"].max() and m["st_min_mv"] == per["st"].min() and m["t_min_mv"] == per["t"].min()
    assert m["t_amp_V5"] == m["t_V5"] and m["r_amp_II"] == m["r_II"] and m["s_amp_V1"] == m["s_V1"]
    assert m["sokolow_mv"] == pytest.approx(m["s_V1"] + max(m["r_V5"], m["r_V6"]))
    assert m["cornell_mv"] == pytest.approx(m["r_aVL"] + m["s_V3"])
    assert (per["r"] + per["s"] >= 0).all()  # the QRS's highest point lies above its lowest in every lead
