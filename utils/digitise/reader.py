"""The signal reader: a 1D network on the digitised leads, the second reader beside the image model.

It is the sim-to-real benchmark's network (utils/synth/realism.py: five convolution blocks over 12 leads at 100 Hz),
trained on the simulator's signals as a page shows them and as the digitiser gives them back: each lead only for the
seconds of its panel (3x4: 2.5 s each, the rhythm strip's lead for 10 s), NaN elsewhere, then `reader_input` (each
panel's median taken away, NaN as 0, clipped to +-5 mV), the one transform for training and reading. Training
copies are roughened as a reading is (amplitude off by up to 20%, noise, a panel shifted by a few samples or lost,
the trace smoothed), so the network does not rely on detail a digitised photo does not keep.

`blend` is the ensemble of the two readers: per label, a weight on the signal reader's logit against the image
model's calibrated logit, chosen on the out-of-fold pictures (the weight with the best AUROC on them, among WEIGHTS).
"""
from __future__ import annotations

import numpy as np

from utils.core.labels import LABELS
from utils.core.metrics import label_aurocs, logit
from utils.digitise.segment import SegmenterError, from_entry
from utils.synth.realism import SignalSet, network, predict, simulated_set, train
from utils.synth.render import LAYOUTS
from utils.synth.waveform import LEADS

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RHYTHMS = (("II", 0.85), ("V1", 0.05), ("III", 0.05), ("", 0.05))  # the rhythm strip's lead ('' none) as drawn


def page_view(signals: np.ndarray, rhythm: str = "II", layout: str = "3x4") -> np.ndarray:
    """(12, n) signals as a page of `layout` shows them: each lead for its panel's seconds, NaN elsewhere; the
    rhythm lead ('' none) for all of them."""
    out = np.full(signals.shape, np.nan, np.float32)
    n = signals.shape[1]
    for row in LAYOUTS[layout]:
        for c, name in enumerate(row):
            i = LEADS.index(name)
            a, b = c * n // len(row), (c + 1) * n // len(row)
            out[i, a:b] = signals[i, a:b]
    if rhythm:
        out[LEADS.index(rhythm)] = signals[LEADS.index(rhythm)]
    return out


def reader_input(signals: np.ndarray) -> np.ndarray:
    """(12, n) or (m, 12, n) leads with NaN where not shown -> the network's input: each panel (each stretch of
    shown samples) less its median, NaN as 0, clipped to +-5 mV, float32."""
    x = np.array(signals, np.float32, copy=True)
    flat = x.reshape(-1, x.shape[-1])
    for row in flat:
        shown = np.isfinite(row)
        if not shown.any():
            continue
        edges = np.flatnonzero(np.diff(np.r_[0, shown.astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2]):
            row[a:b] -= np.median(row[a:b])
    return np.clip(np.nan_to_num(x, nan=0.0), -5, 5)


def roughen(signals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A page view read back as a digitised photo might be: scaled, noisy, panels shifted, smoothed, one lost."""
    x = signals * rng.uniform(0.8, 1.2)
    n = x.shape[1]
    for i in range(len(x)):
        shown = np.flatnonzero(np.isfinite(x[i]))
        if len(shown) and rng.random() < 0.5:
            x[i, shown] = np.roll(x[i, shown], int(rng.integers(-3, 4)))
    if rng.random() < 0.5:
        k = int(rng.integers(2, 4))
        x = np.apply_along_axis(lambda v: np.convolve(v, np.ones(k) / k, "same"), 1, x)
    x = x + rng.normal(0, rng.uniform(0.01, 0.06), x.shape)
    if rng.random() < 0.2:  # a panel the digitiser lost
        i = int(rng.integers(len(x)))
        a = int(rng.integers(0, 4)) * n // 4
        x[i, a:a + n // 4] = np.nan
    return x.astype(np.float32)


def training_set(n: int, seed: int) -> SignalSet:
    """n simulated records, each as a 3x4 page shows it (rhythm lead drawn from RHYTHMS), roughened, prepared."""
    sim = simulated_set(n, seed)
    rng = np.random.default_rng([seed, 7])
    leads, shares = zip(*RHYTHMS)
    views = [roughen(page_view(x, str(rng.choice(leads, p=shares))), rng) for x in sim.x]
    return SignalSet("simulated pages", reader_input(np.stack(views)), sim.y, sim.groups)


def train_reader(n: int = 3000, epochs: int = 8, seed: int = 0):
    """The signal reader trained on n simulated page views (the sim-to-real benchmark's recipe)."""
    return train(training_set(n, seed), epochs, seed)


def read_signals(model, digitised: np.ndarray) -> np.ndarray:
    """(m, 5) probabilities from (m, 12, n) digitised leads (NaN where not shown; an unread picture all NaN)."""
    return predict(model, reader_input(digitised))


def reader_from_state(state: dict):
    model = network(0)
    model.load_state_dict(state)
    return model.eval()


def blend(image: np.ndarray, signal: np.ndarray, weights) -> np.ndarray:
    """(n, 5) ensemble probability: per label sigmoid((1 - w) logit(image) + w logit(signal)); where the signal
    reader has nothing (NaN: the picture was not digitised) the image model's alone."""
    w = np.asarray(weights, float)[None]
    sig = np.where(np.isfinite(signal), signal, image)
    return 1 / (1 + np.exp(-((1 - w) * logit(image) + w * logit(sig))))


def choose_weights(image: np.ndarray, signal: np.ndarray, y: np.ndarray) -> tuple[list[float], list[dict]]:
    """Per label, the weight of WEIGHTS whose blend has the best AUROC on these (out-of-fold) pictures; a tie goes to
    the smaller weight. Returns the weights and a table row per label and weight."""
    per = np.stack([label_aurocs(y, blend(image, signal, [w] * len(LABELS))) for w in WEIGHTS])  # (weights, labels)
    rows = [{"label": label, "weight": w, "oof_auroc": round(float(per[k, j]), 4)}
            for j, label in enumerate(LABELS) for k, w in enumerate(WEIGHTS)]
    chosen = [float(WEIGHTS[int(np.nanargmax(np.round(per[:, j], 6)))]) if np.isfinite(per[:, j]).any() else 0.0
              for j in range(len(LABELS))]
    return chosen, rows


FORMAT = "signal-reader/1"


def reader_entry(model, weights, thresholds, trained_on: int) -> dict:
    """The package's 'signal' entry: the network's tensors, the blend weights and the ensemble's F1 thresholds."""
    return {"format": FORMAT, "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "blend": [float(w) for w in weights], "thresholds": [float(t) for t in thresholds],
            "trained_on": int(trained_on)}


def reader_problem(entry) -> str:
    """What is wrong with a package's 'signal' entry ('' when nothing)."""
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return f"'signal' is not a signal reader ('{FORMAT}')"
    for key in ("blend", "thresholds"):
        value = entry.get(key)
        if not (isinstance(value, (list, tuple)) and len(value) == len(LABELS)
                and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in value)):
            return f"'signal' {key} {value!r} is not one number in [0, 1] per label"
    if not isinstance(entry.get("state"), dict) or not entry["state"]:
        return "'signal' holds no network weights"
    return ""


class SignalReader:
    """A package's signal reader: probabilities from digitised leads, their blend with the image model's, and which
    lead and seconds drove a label (saliency)."""

    def __init__(self, entry: dict):
        self.model = reader_from_state(entry["state"])
        self.weights = list(entry["blend"])
        self.thresholds = np.asarray(entry["thresholds"], float)
        # the digitiser the blend was chosen with: the trace segmenter's mask when the entry holds one. A damaged
        # one is said (`problem`, and each row's `digitiser`) and the classical ink followed instead.
        self.tracer, self.digitiser, self.problem = None, "classical", ""
        if "segmenter" in entry:
            try:
                self.tracer = from_entry(entry["segmenter"], "the package's trace segmenter")[0]
                self.digitiser = "segmenter"
            except SegmenterError as err:
                self.problem = f"{err}: the classical ink is followed instead, which the blend was not chosen on"
                self.digitiser = "classical (the package's segmenter is damaged)"

    def probs(self, digitised: np.ndarray) -> np.ndarray:
        """(m, 5) from (m, 12, n) leads; NaN rows for pictures with nothing read."""
        out = read_signals(self.model, digitised)
        out[np.isnan(digitised).all(axis=(1, 2))] = np.nan
        return out

    def ensemble(self, image: np.ndarray, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, decisions) of the two readers together from the image model's calibrated probability."""
        scores = blend(image, signal, self.weights)
        return scores, (scores >= self.thresholds).astype(int)

    def saliency(self, digitised: np.ndarray, label: int) -> np.ndarray:
        """(12, n) |gradient x input| of one label's logit over one picture's leads, 0 where nothing was shown."""
        import torch

        x = torch.from_numpy(reader_input(digitised)[None]).requires_grad_(True)
        self.model.zero_grad()
        self.model(x)[0, label].backward()
        return (x.grad[0] * x[0]).abs().detach().numpy() * np.isfinite(digitised)
