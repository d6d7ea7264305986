"""Beat timing (sinus with respiratory variation, ectopic beats, atrial fibrillation) and fibrillatory waves."""
from __future__ import annotations

import numpy as np

from utils.synth.findings import Rhythm, unit


def beat_schedule(r: Rhythm, rng: np.random.Generator, duration: float):
    """QRS onset times (s), the template of each beat (0 conducted, 1 ventricular ectopic), amplitude factors."""
    rr = 60.0 / r.hr
    t = -rng.uniform(0, rr)
    onsets, templates = [], []
    resp_period, resp_phase = rng.uniform(3, 6), rng.uniform(0, 2 * np.pi)
    while t < duration + 0.3:
        onsets.append(t)
        templates.append(0)
        if r.kind == "af":
            step = rr * np.exp(rng.normal(0, r.rr_cv))
        else:
            step = rr * (1 + r.resp_mod * np.sin(2 * np.pi * t / resp_period + resp_phase)) * rng.normal(1, 0.01)
        t += max(step, 0.28)
    onsets, templates = np.array(onsets), np.array(templates)
    if r.ectopic and len(onsets) > 4:
        k = int(rng.integers(2, len(onsets) - 1))
        early = 0.62 if r.ectopic == "pvc" else 0.72
        onsets[k] = onsets[k - 1] + early * (onsets[k] - onsets[k - 1])
        if r.ectopic == "pvc":
            templates[k] = 1  # compensatory pause: the next sinus beat keeps its time
        else:
            onsets[k + 1:] -= (1 - early) * rr  # a PAC resets the sinus node
    amp = 1 + 0.04 * np.sin(2 * np.pi * onsets / resp_period + resp_phase)
    return onsets, templates, amp


def f_waves(r: Rhythm, rng: np.random.Generator, n: int, fs: int) -> np.ndarray:
    """(3, n) fibrillatory activity: 4-9 Hz, wandering frequency and amplitude, strongest in V1 and inferior leads."""
    t = np.arange(n) / fs
    freq = rng.uniform(4.5, 8.5) + np.cumsum(rng.normal(0, 0.02, n)) / np.sqrt(fs)
    phase = 2 * np.pi * np.cumsum(freq) / fs
    env = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6))
    wave = np.sin(phase) + 0.4 * np.sin(2 * phase + rng.uniform(0, 6))
    direction = unit([-0.25, 0.6, 0.8] + rng.normal(0, 0.15, 3))
    return direction[:, None] * (r.f_amp * env * wave)[None, :]
