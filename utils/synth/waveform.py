"""12-lead ECG simulator: one cardiac dipole, beat by beat, seen through the electrodes' lead fields.

The heart is a 3-D dipole (x: patient's left, y: inferior, z: anterior). Each beat is a sum of waves (P, septal q,
main R, terminal S, ST plateau, T, U), each an asymmetric Gaussian (or a smooth plateau) in time times a 3-D
vector. Electrode potentials are the dipole projected on each electrode's lead-field vector plus electrode noise;
the 12 leads are then formed exactly as an ECG machine forms them, so III = II - I, aVR = -(I+II)/2,
aVL = I - II/2 and aVF = II - I/2 hold to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from utils.synth.findings import BeatModel, apply_findings, normal_beat
from utils.synth.rhythm import beat_schedule, f_waves

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Limb electrodes chosen so that I = LA - RA = x and II = LL - RA points at +60 degrees; their mean is 0.
LIMB_FIELDS = np.array([[-0.5, -0.2887, 0.0], [0.5, -0.2887, 0.0], [0.0, 0.5774, 0.0]])
# V1-V6 as the Dower transform places them (Dower et al. 1988, the Frank X, Y, Z to 12-lead matrix; its Z points
# backwards): degrees from left (x) towards anterior (z) and the relative gains, scaled to this dipole's voltages.
# The angles decide where the R wave grows across the chest: with these, normal records have PTB-XL's R progression
# (median R in V1-V6 0.14, 0.43, 0.82, 1.33, 1.39, 1.14 mV), where an earlier placement gave a late transition (R in V3
# 0.2 mV) that made every simulated normal look like a poor-R-progression infarct.
PRECORDIAL_ANGLES = np.array([119.0, 88.0, 55.0, 26.0, 4.0, -16.0])
PRECORDIAL_GAINS = 1.45 * np.array([1.05, 1.39, 1.55, 1.36, 1.13, 0.86])


@dataclass
class Record:
    signals: np.ndarray  # (12, n) float32, mV
    fs: int
    labels: dict[str, int]
    findings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    leads: tuple[str, ...] = LEADS


def electrode_fields(rng: np.random.Generator) -> np.ndarray:
    """(9, 3) lead-field vectors of RA, LA, LL, V1-V6, with per-person placement and habitus jitter."""
    ang = np.deg2rad(PRECORDIAL_ANGLES + rng.normal(0, 6, 6))
    gain = PRECORDIAL_GAINS * rng.lognormal(0, 0.12) * rng.lognormal(0, 0.06, 6)
    pre = np.stack([np.cos(ang), np.full(6, rng.normal(0.12, 0.05)), np.sin(ang)], 1) * gain[:, None]
    return np.vstack([LIMB_FIELDS, pre])


def leads_from_electrodes(e: np.ndarray) -> np.ndarray:
    """Standard 12 leads from (9, n) electrode potentials RA, LA, LL, V1..V6."""
    ra, la, ll = e[0], e[1], e[2]
    wct = (ra + la + ll) / 3.0
    limb = np.stack([la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2])
    return np.vstack([limb, e[3:] - wct])


def _evaluate(model: BeatModel, onsets: np.ndarray, template: np.ndarray, amp: np.ndarray, fs: int,
              n: int) -> np.ndarray:
    """Sum every wave of every beat into a (3, n) dipole signal, each wave type on a window of its own width."""
    out = np.zeros((3, n))
    for tpl in np.unique(template):
        beats = template == tpl
        for k in np.flatnonzero(np.abs(model.vec[tpl]).sum(1) > 0):
            c = onsets[beats] + model.offset[tpl, k]
            sl, sr, half = model.sig_l[tpl, k], model.sig_r[tpl, k], model.half[tpl, k]
            w = int(np.ceil((half + 4 * max(sl, sr)) * fs)) + 1
            idx = np.round(c * fs).astype(int)[:, None] + np.arange(-w, w + 1)
            t = idx / fs - c[:, None]
            if half > 0:  # ST plateau: two soft edges
                shape = 1 / (1 + np.exp(-(t + half) / sl)) / (1 + np.exp((t - half) / sr))
            else:
                shape = np.exp(-0.5 * (t / np.where(t < 0, sl, sr)) ** 2)
            shape *= amp[beats][:, None]
            ok = (idx >= 0) & (idx < n)
            out += model.vec[tpl, k][:, None] * np.bincount(idx[ok], weights=shape[ok], minlength=n)[None, :n]
    return out


def _noise(rng: np.random.Generator, n: int, fs: int, level: float) -> np.ndarray:
    """(9, n) electrode noise: baseline wander, mains hum, muscle (EMG) noise, sometimes in bursts."""
    t = np.arange(n) / fs
    f = rng.uniform(0.05, 0.45, 3)
    basis = np.vstack([np.sin(2 * np.pi * f[:, None] * t), np.cos(2 * np.pi * f[:, None] * t)])  # (6, n)
    out = rng.uniform(-0.07, 0.07, (9, 6)) * level @ basis  # wander shared by electrodes in different mixes
    out += rng.uniform(0, 0.015) * level * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t + rng.uniform(0, 6))
    emg = rng.standard_normal((9, n + 8), dtype=np.float32)
    width = max(1, fs // 100)  # moving average: EMG energy sits below ~100 Hz
    csum = np.cumsum(emg, axis=1)
    emg = (csum[:, width:width + n] - csum[:, :n]) / np.sqrt(width)
    sigma = rng.uniform(0.003, 0.02) * level
    if rng.random() < 0.15:  # a burst of muscle activity
        s0 = int(rng.integers(0, n))
        env = np.ones(n)
        env[s0:s0 + int(rng.uniform(0.5, 2.5) * fs)] += rng.uniform(2, 5)
        return out + emg * (sigma * env)
    return out + emg * sigma


def simulate(labels: dict[str, int], rng: np.random.Generator, fs: int = 500, duration: float = 10.0,
             noise: float = 1.0) -> Record:
    """One 10 s, 12-lead record showing the given labels (each modelled from its clinical criteria)."""
    n = int(round(duration * fs))
    model, rhythm = normal_beat(rng)
    findings = apply_findings(model, rhythm, labels, rng)
    onsets, template, amp = beat_schedule(rhythm, rng, duration)
    dipole = _evaluate(model, onsets, template, amp, fs, n)
    if rhythm.f_amp > 0:
        dipole += f_waves(rhythm, rng, n, fs)
    electrodes = electrode_fields(rng) @ (_orientation(rng) @ dipole) + _noise(rng, n, fs, noise)
    signals = leads_from_electrodes(electrodes).astype(np.float32)
    meta = {"hr": round(rhythm.hr, 1), "pr_ms": round(rhythm.pr * 1000), "qrs_ms": round(rhythm.qrs * 1000),
            "qt_ms": round(rhythm.qt * 1000), "rhythm": rhythm.kind, "ectopic": rhythm.ectopic,
            "qrs_onsets_s": [round(float(x), 4) for x in onsets if 0 <= x < duration]}
    return Record(signals, fs, dict(labels), findings, meta)


def _orientation(rng: np.random.Generator) -> np.ndarray:
    """A small random rotation of the heart in the chest (about each axis, a few degrees)."""
    a, b, c = np.deg2rad(rng.normal(0, [6, 8, 6]))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx
