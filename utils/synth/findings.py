"""Beat model of a normal heart, and each label modelled from its clinical criteria with subtypes and severity.

Directions are in the heart's frame: x the patient's left, y inferior, z anterior. Wave vectors are in mV.
Sources for the criteria: standard ECG criteria (AHA/ACCF/HRS 2009 recommendations; Sokolow-Lyon for LVH;
Fridericia QT correction). Severities are drawn wide on purpose: many findings are as subtle as real ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WAVES = ("P", "P2", "q", "R", "R2", "S", "ST", "T", "U")
W = {name: i for i, name in enumerate(WAVES)}
TERRITORIES = {  # direction of the infarcted wall, and how often each is seen (PTB-XL: ASMI and IMI dominate)
    "inferior": ((0.0, 1.0, -0.1), 0.38), "anteroseptal": ((-0.35, 0.0, 1.0), 0.38),
    "anterior": ((0.3, 0.1, 1.0), 0.08), "lateral": ((1.0, -0.35, 0.1), 0.06),
    "inferolateral": ((0.7, 0.8, -0.1), 0.10),
}


def unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def polar(theta_deg: float, z: float) -> np.ndarray:
    t = np.deg2rad(theta_deg)
    return np.array([np.cos(t), np.sin(t), z])


@dataclass
class BeatModel:
    """Waves of two beat templates (0: conducted, 1: ventricular ectopic), times relative to QRS onset."""
    offset: np.ndarray  # (2, K) s
    sig_l: np.ndarray   # (2, K) s, rising side
    sig_r: np.ndarray   # (2, K) s, falling side
    half: np.ndarray    # (2, K) s, plateau half-width (ST only)
    vec: np.ndarray     # (2, K, 3) mV


@dataclass
class Rhythm:
    hr: float
    pr: float
    qrs: float
    qt: float
    kind: str = "sinus"      # sinus or af
    rr_cv: float = 0.0       # beat-to-beat irregularity for AF
    resp_mod: float = 0.03   # sinus arrhythmia
    ectopic: str = ""        # "", "pac" or "pvc"
    f_amp: float = 0.0       # fibrillatory wave amplitude, mV


def _set_qrs_timing(m: BeatModel, qrs: float, qt: float) -> None:
    o, sl, sr = m.offset[0], m.sig_l[0], m.sig_r[0]
    o[W["q"]], sl[W["q"]], sr[W["q"]] = 0.16 * qrs, 0.06 * qrs, 0.06 * qrs
    o[W["R"]], sl[W["R"]], sr[W["R"]] = 0.42 * qrs, 0.10 * qrs, 0.10 * qrs
    o[W["S"]], sl[W["S"]], sr[W["S"]] = 0.74 * qrs, 0.08 * qrs, 0.085 * qrs
    scale = qt / 0.40
    sl[W["T"]], sr[W["T"]] = 0.068 * scale, 0.042 * scale
    o[W["T"]] = qt - 2.6 * sr[W["T"]]
    o[W["U"]], sl[W["U"]], sr[W["U"]] = qt + 0.09, 0.035, 0.035
    half = max((o[W["T"]] - qrs) / 2, 0.02)
    o[W["ST"]], m.half[0, W["ST"]], sl[W["ST"]], sr[W["ST"]] = qrs + half, half, 0.008, 0.05


def normal_beat(rng: np.random.Generator) -> tuple[BeatModel, Rhythm]:
    """A normal adult beat with the natural spread of rate, intervals, axis and voltages."""
    k = len(WAVES)
    m = BeatModel(np.zeros((2, k)), np.full((2, k), 0.01), np.full((2, k), 0.01), np.zeros((2, k)),
                  np.zeros((2, k, 3)))
    hr = float(np.clip(rng.lognormal(np.log(70), 0.2), 42, 130))
    rr = 60 / hr
    rhythm = Rhythm(hr=hr, pr=float(np.clip(rng.normal(0.175, 0.025) - 0.02 * (rr < 0.6), 0.12, 0.22)),
                    qrs=float(np.clip(rng.normal(0.084, 0.009), 0.066, 0.106)),
                    qt=float(np.clip(rng.normal(0.425, 0.018), 0.38, 0.46) * rr ** (1 / 3)),
                    resp_mod=float(rng.uniform(0.0, 0.06)))
    axis = float(np.clip(rng.normal(40, 24), -30, 95))
    volt = rng.lognormal(0, 0.15)  # real normals: Sokolow-Lyon 1.5-3.1 mV (10th-90th percentile)
    # near-findings drawn without a label, at PTB-XL's rates (771 records): low QRS voltage (LVOLT, 1.7%) and LVH
    # voltage without a hypertrophy diagnosis (VCLVH or HVOLT without HYP, 2%: the young and athletic)
    volt *= float(rng.choice([1.0, rng.uniform(0.45, 0.65), rng.uniform(1.45, 1.9)], p=[0.963, 0.017, 0.02]))
    p_dur = float(np.clip(rng.normal(0.10, 0.012), 0.07, 0.12))
    m.offset[0, W["P"]] = -rhythm.pr + p_dur / 2
    m.sig_l[0, W["P"]] = m.sig_r[0, W["P"]] = p_dur / 5.2
    m.vec[0, W["P"]] = polar(rng.normal(55, 12), rng.normal(0.05, 0.1)) * rng.uniform(0.08, 0.2)
    # septal forces anterior and a little rightward (r in V1-V2, small q in I and V5-V6), the main forces left and
    # posterior, the terminal forces posterior and superior (S in V1-V3, small in V5-V6), the T anterior-left (tallest
    # in V2-V4); each matched to PTB-XL normals' median R, S and T per lead (utils.synth.realism --features)
    m.vec[0, W["q"]] = unit([-0.4, rng.normal(0.15, 0.2), rng.normal(1.0, 0.2)]) * rng.uniform(0.06, 0.22) * volt
    m.vec[0, W["R"]] = unit(polar(axis, rng.normal(-0.2, 0.15))) * rng.lognormal(np.log(1.2), 0.15) * volt
    m.vec[0, W["S"]] = unit([-0.1, rng.normal(-0.3, 0.2), rng.normal(-0.9, 0.2)]) * rng.uniform(0.3, 0.7) * volt
    t_dir = unit(polar(axis + rng.normal(0, 18), rng.normal(0.45, 0.2)))
    m.vec[0, W["T"]] = t_dir * rng.lognormal(np.log(0.30), 0.3) * np.sqrt(volt)
    # normal J-point elevation in V1-V3 (common in men); sometimes early repolarisation as well, so that
    # ST elevation alone is not MI
    m.vec[0, W["ST"]] = np.array([0.0, 0.0, 1.0]) * max(0.0, rng.normal(0.04, 0.025))
    if rng.random() < 0.12:
        m.vec[0, W["ST"]] += t_dir * rng.uniform(0.02, 0.08)
    if rng.random() < 0.3:
        m.vec[0, W["U"]] = t_dir * rng.uniform(0.02, 0.06)
    _set_qrs_timing(m, rhythm.qrs, rhythm.qt)
    _ectopic_template(m, rng)
    if rng.random() < 0.08:
        rhythm.ectopic = str(rng.choice(["pac", "pvc"]))
    return m, rhythm


def _ectopic_template(m: BeatModel, rng: np.random.Generator) -> None:
    """A ventricular ectopic beat: no P, wide bizarre QRS, T opposite to it."""
    d = unit(rng.normal(0, 1, 3))
    wide = rng.uniform(0.14, 0.18)
    m.offset[1, W["R"]], m.sig_l[1, W["R"]], m.sig_r[1, W["R"]] = 0.45 * wide, 0.16 * wide, 0.2 * wide
    m.vec[1, W["R"]] = d * rng.uniform(1.2, 2.2)
    m.offset[1, W["T"]], m.sig_l[1, W["T"]], m.sig_r[1, W["T"]] = wide + 0.18, 0.08, 0.05
    m.vec[1, W["T"]] = -d * rng.uniform(0.3, 0.6)


# --- the five labels ---------------------------------------------------------------------------------------

def conduction(m: BeatModel, r: Rhythm, rng: np.random.Generator, labels: dict) -> list[str]:
    # subtype mix after PTB-XL's CD statements (771 records: LAFB 33%, IRBBB 23%, IVCD 15%, 1AVB 13%, CRBBB 7%,
    # CLBBB 5%)
    kind = str(rng.choice(["RBBB", "LBBB", "LAFB", "IRBBB", "IVCD", "1AVB"],
                          p=[0.07, 0.05, 0.36, 0.23, 0.15, 0.14]))
    out = [f"CD:{kind}"]
    if kind == "1AVB" or rng.random() < 0.12:
        r.pr = float(rng.uniform(0.21, 0.34))
        out += ["CD:1AVB"] if kind != "1AVB" else []
        m.offset[0, W["P"]] = -r.pr + 0.05
    v = m.vec[0]
    if kind == "RBBB":
        r.qrs = float(rng.uniform(0.115, 0.16))
        m.offset[0, W["R2"]] = r.qrs - 0.035  # late slow rightward-anterior forces: rSR' in V1, wide S in I, V6
        m.sig_l[0, W["R2"]], m.sig_r[0, W["R2"]] = 0.018, 0.016
        v[W["R2"]] = unit([-0.75, rng.normal(0.1, 0.15), 0.7]) * rng.uniform(0.35, 0.9)
        v[W["T"]] -= np.array([0, 0, 1.0]) * max(v[W["T"], 2], 0) * rng.uniform(0.8, 1.8)
    elif kind == "LBBB":
        r.qrs = float(rng.uniform(0.125, 0.18))
        lead = unit([1.0, rng.normal(0.2, 0.2), -0.75])
        v[W["q"]] = lead * rng.uniform(0.05, 0.15)       # septum activated from the left: no septal q
        v[W["R"]] = lead * rng.uniform(1.0, 1.9)
        m.offset[0, W["R2"]] = r.qrs * 0.7              # notched, broad R in I, aVL, V5-V6
        m.sig_l[0, W["R2"]] = m.sig_r[0, W["R2"]] = r.qrs * 0.12
        v[W["R2"]] = lead * rng.uniform(0.6, 1.2)
        v[W["S"]] *= 0.3
        v[W["T"]] = -lead * rng.uniform(0.2, 0.45)       # secondary, discordant ST-T
        v[W["ST"]] = -lead * rng.uniform(0.05, 0.15)
    elif kind == "IRBBB":  # a small terminal R' in V1 with QRS under 120 ms
        r.qrs = float(rng.uniform(0.095, 0.115))
        m.offset[0, W["R2"]] = r.qrs - 0.022
        m.sig_l[0, W["R2"]], m.sig_r[0, W["R2"]] = 0.011, 0.01
        v[W["R2"]] = unit([-0.7, 0.1, 0.7]) * rng.uniform(0.15, 0.45)
    elif kind == "LAFB":
        r.qrs = min(r.qrs + rng.uniform(0.0, 0.015), 0.118)
        rot = polar(rng.uniform(-75, -45), v[W["R"], 2])
        v[W["R"]] = unit(rot) * np.linalg.norm(v[W["R"]])
        # small q in I/aVL, a small r in II/III (often hardly there at 100 Hz: real LAFB was read as inferior MI)
        v[W["q"]] += np.array([0.0, 0.12, 0.0]) * rng.uniform(0.1, 0.5)
    elif kind == "IVCD":
        r.qrs = float(rng.uniform(0.095, 0.125))
    _set_qrs_timing(m, r.qrs, max(r.qt, r.qrs + 0.25))
    return out


def hypertrophy(m: BeatModel, r: Rhythm, rng: np.random.Generator, labels: dict) -> list[str]:
    v = m.vec[0]
    kind = str(rng.choice(["LVH", "LAE", "RVH"], p=[0.82, 0.11, 0.07]))  # PTB-XL's HYP holds atrial enlargement too
    if kind == "LAE":  # left atrial enlargement alone: a broad notched P, ventricles as they were
        _left_atrium(m, rng)
        tags = ["HYP:LAE"]
    elif kind == "LVH":
        big = rng.uniform(1.4, 2.4)  # voltage criteria met in many, borderline in some (real Sokolow-Lyon 1.8-4.3)
        v[W["R"]] = unit(v[W["R"]] + np.array([0.3, 0.0, -0.1])) * np.linalg.norm(v[W["R"]]) * big
        v[W["S"]] *= rng.uniform(1.0, 1.5)
        r.qrs = min(r.qrs + rng.uniform(0.0, 0.008), 0.115)
        _set_qrs_timing(m, r.qrs, r.qt)
        # strain (ST depression, T inverted opposite the dominant QRS) is coded with an ST/T statement in PTB-XL (LVH
        # with ISC_, STD_ or NST_): mostly where the record is labelled STTC as well, seldom where it is not
        strain = rng.random() < (0.7 if labels.get("STTC") else 0.15)
        if strain:
            v[W["ST"]] -= unit(v[W["R"]]) * rng.uniform(0.05, 0.15)
            v[W["T"]] = -unit(v[W["R"]]) * rng.uniform(0.05, 0.3)
        else:  # without strain, often a little ST depression and a lower T
            v[W["ST"]] -= unit(v[W["R"]]) * rng.uniform(0.0, 0.05)
            v[W["T"]] *= rng.uniform(0.5, 1.0)
        if rng.random() < 0.35:
            _left_atrium(m, rng)
        tags = [f"HYP:{kind}"] + (["HYP:strain"] if strain else [])
    else:
        kind = "RVH"
        v[W["R2"]] = unit([-0.5, 0.4, 0.75]) * rng.uniform(0.5, 1.3)  # dominant late anterior-right forces
        m.offset[0, W["R2"]], m.sig_l[0, W["R2"]], m.sig_r[0, W["R2"]] = r.qrs * 0.62, 0.012, 0.012
        v[W["R"]] = unit(polar(rng.uniform(95, 140), -0.2)) * np.linalg.norm(v[W["R"]]) * rng.uniform(0.6, 0.9)
        v[W["T"]] -= np.array([0, 0, 0.4]) * rng.uniform(0.3, 1.0)
        m.vec[0, W["P"]] *= rng.uniform(1.0, 1.6)
        tags = [f"HYP:{kind}"]
    return tags


def _left_atrium(m: BeatModel, rng: np.random.Generator) -> None:
    """Left atrial abnormality: a second, later and posterior P hump (broad notched P, negative end in V1)."""
    m.vec[0, W["P2"]] = m.vec[0, W["P"]] * rng.uniform(0.5, 1.0) + np.array([0, 0, -rng.uniform(0.03, 0.08)])
    m.offset[0, W["P2"]] = m.offset[0, W["P"]] + rng.uniform(0.03, 0.05)
    m.sig_l[0, W["P2"]] = m.sig_r[0, W["P2"]] = m.sig_l[0, W["P"]]


def infarction(m: BeatModel, r: Rhythm, rng: np.random.Generator, labels: dict) -> list[str]:
    names = list(TERRITORIES)
    probs = np.array([TERRITORIES[n][1] for n in names])
    where = str(rng.choice(names, p=probs / probs.sum()))
    d = unit(TERRITORIES[where][0])
    stage = str(rng.choice(["old", "acute", "evolving"], p=[0.7, 0.12, 0.18]))
    v = m.vec[0]
    q_mag = rng.uniform(0.01, 0.15) if stage != "acute" or rng.random() < 0.5 else 0.0
    v[W["q"]] -= d * q_mag                       # necrosis: the early forces point away from the dead wall
    along = max(float(v[W["R"]] @ d), 0.0)
    v[W["R"]] -= d * along * rng.uniform(0.3, 1.3)  # loss of R (poor R progression for anterior walls)
    if stage in ("acute", "evolving") or rng.random() < 0.15:
        v[W["ST"]] += d * (rng.uniform(0.08, 0.35) if stage == "acute" else rng.uniform(0.02, 0.1))
    if stage in ("evolving", "old"):
        v[W["T"]] *= rng.uniform(0.4, 1.0)  # flattened T beyond the wall as well
    if stage in ("evolving", "old") and rng.random() < 0.6:
        flip = float(v[W["T"]] @ d)
        v[W["T"]] -= d * (abs(flip) * rng.uniform(1.0, 2.0) + rng.uniform(0.0, 0.15))
    return [f"MI:{where}:{stage}"]


def st_t_change(m: BeatModel, r: Rhythm, rng: np.random.Generator, labels: dict) -> list[str]:
    # after PTB-XL's STTC statements: non-diagnostic T changes and non-specific ST changes dominate, then
    # ischaemic T inversion and ST depression, digitalis (sagging ST, short QT), rarely a long QT
    kinds = ["ST_depression", "T_flat", "T_inversion", "ST_sag", "long_QT"]
    chosen = list(rng.choice(kinds, size=rng.choice([1, 2], p=[0.7, 0.3]), replace=False,
                             p=[0.22, 0.42, 0.22, 0.11, 0.03]))
    if "long_QT" in chosen:
        r.qt = float(rng.uniform(0.47, 0.56) * (60 / r.hr) ** (1 / 3))
    if "ST_sag" in chosen:
        r.qt *= rng.uniform(0.88, 0.97)
    _set_qrs_timing(m, r.qrs, r.qt)
    v = m.vec[0]
    # where the change shows: lateral and inferolateral leads most often (PTB-XL's STTC records: T lowest against
    # normals in I, aVL, V5-V6, least in V2-V3)
    region = unit(np.array([(1.0, 0.2, -0.1), (0.2, 1.0, -0.1), (0.7, 0.7, 0.2), (0.3, 0.1, 1.0)])[
        rng.choice(4, p=[0.4, 0.2, 0.3, 0.1])])
    for kind in chosen:
        if kind == "ST_depression":
            v[W["ST"]] -= region * rng.uniform(0.04, 0.2)
            m.sig_r[0, W["ST"]] = rng.uniform(0.01, 0.05)  # horizontal or downsloping
        elif kind == "ST_sag":  # scooped ST depression opposite the QRS, low T
            v[W["ST"]] -= unit(v[W["R"]]) * rng.uniform(0.05, 0.15)
            m.sig_r[0, W["ST"]] = rng.uniform(0.03, 0.06)
            v[W["T"]] *= rng.uniform(0.2, 0.7)
        elif kind == "T_flat":  # the T lowered where the change shows, less elsewhere
            along = max(float(v[W["T"]] @ region), 0.0)
            v[W["T"]] -= region * along * rng.uniform(0.5, 0.95)
            v[W["T"]] *= rng.uniform(0.5, 1.0)
        elif kind == "T_inversion":
            v[W["T"]] -= region * (max(float(v[W["T"]] @ region), 0) + rng.uniform(0.1, 0.4))
    return [f"STTC:{k}" for k in chosen]


def fibrillation(m: BeatModel, r: Rhythm, rng: np.random.Generator, labels: dict) -> list[str]:
    r.kind = "af"
    hr = float(np.clip(rng.normal(86, 22), 45, 160))
    r.qt *= (r.hr / hr) ** (1 / 3) * rng.uniform(0.84, 0.97)  # real AF: QT 330 ms at the median (sinus 372)
    r.hr = hr
    _set_qrs_timing(m, r.qrs, r.qt)
    r.rr_cv = float(rng.uniform(0.1, 0.32))
    r.f_amp = float(rng.uniform(0.0, 0.06))  # fine (almost invisible) to coarse f-waves (real: P-region 0.02 mV)
    m.vec[0, W["T"]] *= rng.uniform(0.2, 0.9)  # real AF: flat T waves and sagging ST (rate, digitalis)
    if rng.random() < 0.8:
        m.vec[0, W["ST"]] -= unit(m.vec[0, W["R"]]) * rng.uniform(0.04, 0.15)
    # the frontal QRS axis of AF patients sits further left (PTB-XL: median 11 degrees against 32 in normals; R in II
    # 0.55 against 0.85 mV)
    turn = np.deg2rad(-abs(rng.normal(12, 14)))
    rot = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    m.vec[0, [W["q"], W["R"], W["S"]]] = m.vec[0, [W["q"], W["R"], W["S"]]] @ rot.T
    r.ectopic = ""
    m.vec[0, W["P"]] = 0.0
    m.vec[0, W["P2"]] = 0.0
    return ["AF:" + ("coarse" if r.f_amp > 0.05 else "fine")]


APPLY_ORDER = (("CD", conduction), ("HYP", hypertrophy), ("MI", infarction), ("STTC", st_t_change),
               ("AF", fibrillation))


def apply_findings(m: BeatModel, r: Rhythm, labels: dict[str, int], rng: np.random.Generator) -> list[str]:
    out: list[str] = []
    if any(labels.get(k) for k in ("MI", "HYP", "STTC")):
        # abnormal ECGs come from older, sicker people: faster rates and longer PR (PTB-XL: normal median 71/min
        # and 174 ms, MI/HYP/STTC 77-78/min and 184-192 ms)
        f = rng.lognormal(np.log(1.09), 0.1)
        r.hr = float(np.clip(r.hr * f, 40, 150))
        r.qt *= f ** (-1 / 3)
        longer = float(min(rng.uniform(0.0, 0.025), max(0.0, 0.2 - r.pr)))
        r.pr += longer
        m.offset[0, W["P"]] -= longer
        _set_qrs_timing(m, r.qrs, r.qt)
    for name, fn in APPLY_ORDER:
        if labels.get(name):
            out += fn(m, r, rng, labels)
    return out or ["NORM"]
