"""What drove the signal reader: which lead and which seconds, drawn on the photo (step 06).

Grad-CAM stays with the image model; the signal reader's evidence is a saliency over the leads it read back: the
gradient of a label's logit times the input (utils/digitise/reader.py), per lead and sample. Summed per lead it says
which lead drove the label; over a sliding second, when. Drawn on the photo, each trace the digitiser found is
coloured by its saliency, so the place on the paper that drove the call is where the colour is hottest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.figures import pyplot
from utils.core.labels import LABELS
from utils.digitise.trace import FS
from utils.synth.waveform import LEADS


def drivers(saliency: np.ndarray) -> dict:
    """The lead with the largest share of the saliency (per sample it shows), that share, and its busiest second
    (start, end in s)."""
    shown = np.maximum((saliency > 0).sum(axis=1), 1)
    per_lead = saliency.sum(axis=1) / shown  # per sample shown: a 10 s rhythm lead is not favoured for its length
    total = per_lead.sum()
    if total <= 0:
        return {"lead": "", "lead_share": np.nan, "from_s": np.nan, "to_s": np.nan}
    lead = int(np.argmax(per_lead))
    window = np.convolve(saliency[lead], np.ones(FS), "valid")
    start = int(np.argmax(window))
    return {"lead": LEADS[lead], "lead_share": round(float(per_lead[lead] / total), 3),
            "from_s": round(start / FS, 2), "to_s": round((start + FS) / FS, 2)}


def signal_drivers(predictor, rows: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per picture and label: the signal reader's probability and what drove it (lead, share, seconds); and per
    picture id the (image, digitised, saliency per label) kept for drawing. Pictures not digitised are listed with
    the digitiser's reason."""
    table, kept = [], {}
    if predictor.signal is None:
        return pd.DataFrame(), kept
    for image_id, path in zip(rows["id"], rows["image"]):
        reading = predictor.read_one(path)
        d = reading.rec["digitised"]
        if not d.read:
            table.append({"id": image_id, "label": "", "signal": np.nan, "lead": "", "why": d.problem})
            continue
        maps = [predictor.signal.saliency(d.signals, j) for j in range(len(LABELS))]
        kept[image_id] = (reading.image, d, maps)
        table += [{"id": image_id, "label": label, "signal": round(float(reading.signal_probs[j]), 4),
                   **drivers(maps[j]), "why": ""} for j, label in enumerate(LABELS)]
    return pd.DataFrame(table), kept


def saliency_figure(table: pd.DataFrame, kept: dict, path: Path) -> Path | None:
    """One panel per label: the picture the signal reader is surest of it on, its traces coloured by the label's
    saliency (hot: what drove the call), titled with the lead and seconds that drove it most."""
    from matplotlib.collections import LineCollection

    read = table[table["label"] != ""]
    if read.empty:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(LABELS), figsize=(5 * len(LABELS), 4.2), constrained_layout=True)
    for ax, (j, label) in zip(np.atleast_1d(axes), enumerate(LABELS)):
        best = read[read["label"] == label].sort_values("signal", ascending=False).iloc[0]
        img, d, maps = kept[best["id"]]
        ax.imshow(img[..., ::-1])
        peak = max(float(maps[j].max()), 1e-9)
        for name, x, y, samples in d.paths:
            lead = LEADS.index(name.replace("_rhythm", ""))
            heat = maps[j][lead, samples] / peak
            segments = np.stack([np.c_[x[:-1], y[:-1]], np.c_[x[1:], y[1:]]], axis=1)
            ax.add_collection(LineCollection(segments, array=heat[:-1], cmap="plasma", clim=(0, 1), linewidths=1.6))
        ax.set_title(f"{label} (signal reader {best['signal']:.2f}): {best['lead']} "
                     f"{best['from_s']:.1f}-{best['to_s']:.1f} s", fontsize=9)
        ax.axis("off")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def signal_report(predictor, rows: pd.DataFrame, folder: Path) -> tuple[pd.DataFrame | str, Path | None]:
    """Step 06's part: signal_drivers.csv and signal_saliency.png in folder; returns per label the leads that drove
    it most often (or why there is nothing to show) and the figure (None without one)."""
    table, kept = signal_drivers(predictor, rows)
    if table.empty:
        return "the package has no signal reader: nothing to show", None
    table.to_csv(Path(folder) / "signal_drivers.csv", index=False)
    figure = saliency_figure(table, kept, Path(folder) / "signal_saliency.png")
    read = table[table["label"] != ""]
    if read.empty:
        return "no picture of the sample was digitised (signal_drivers.csv lists why)", figure
    summary = read.groupby("label", sort=False).agg(
        pictures=("id", "size"), top_leads=("lead", lambda s: ", ".join(s.value_counts().head(3).index)),
        mean_share=("lead_share", "mean")).round(3).reset_index()
    return summary, figure
