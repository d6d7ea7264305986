"""Step 06: CAM galleries per label and the attention table, from the packaged ensemble and the test predictions."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from utils.core.figures import pyplot
from utils.core.imageio import read_image
from utils.core.labels import LABELS
from utils.gradcam.attention import energy_shares

KINDS = ("TP", "FP", "FN")


def pick_gallery(pred: pd.DataFrame, label: str, kind: str, n: int, threshold: float = 0.5) -> pd.DataFrame:
    """Most confident true positives, false positives (highest-scored negatives), false negatives (lowest positives)."""
    y, p = pred[f"y_{label}"], pred[label]
    if kind == "TP":
        part = pred[(y == 1) & (p >= threshold)].sort_values(label, ascending=False)
    elif kind == "FP":
        part = pred[(y == 0) & (p >= threshold)].sort_values(label, ascending=False)
    elif kind == "FN":
        part = pred[(y == 1) & (p < threshold)].sort_values(label)
    else:
        raise ValueError(f"gallery kind {kind!r}: choose from {KINDS}")
    return part.head(n)


def label_thresholds(predictor) -> dict[str, float]:
    """Where each label's yes begins on the test predictions' scores: the package's F1 thresholds act on calibrated
    probabilities (the soft vote); the other votes' scores split at 0.5."""
    soft = predictor.pkg["vote"] == "soft"
    return dict(zip(LABELS, predictor.calibration.thresholds if soft else [0.5] * len(LABELS)))


def cam_rows(pred: pd.DataFrame, n_images: int, gallery_size: int, thresholds: dict[str, float]) -> pd.DataFrame:
    """The test pictures whose CAMs are made: the first n_images, and every gallery's pictures when the labels are
    known."""
    wanted = set(pred["id"].head(n_images))
    if all(f"y_{k}" in pred for k in LABELS):
        wanted |= {i for label in LABELS for kind in KINDS
                   for i in pick_gallery(pred, label, kind, gallery_size, thresholds[label])["id"]}
    return pred[pred["id"].isin(wanted)]


def gallery_figures(pred: pd.DataFrame, cams: dict, n: int, folder: Path, thresholds: dict[str, float]) -> list[Path]:
    """One gallery per label (gallery_<label>.png in folder), when the labels are known."""
    if not all(f"y_{k}" in pred for k in LABELS):
        return []
    return [gallery_figure(pred, cams, label, n, Path(folder) / f"gallery_{label}.png", thresholds[label])
            for label in LABELS]


def annotation_of(image: str) -> dict | None:
    ann = Path(image).parent.parent / "annotations" / f"{Path(image).stem}.json"
    return json.loads(ann.read_text()) if ann.is_file() else None


def analyse(predictor, rows: pd.DataFrame, method: str = "gradcam") -> tuple[dict, pd.DataFrame]:
    """CAMs of every label for each row on its original photo; attention shares where an annotation exists."""
    cams, shares = {}, []
    readings = predictor.read(rows["image"].tolist(), batch_size=1, keep=True, desc="Grad-CAM")
    for r, reading in zip(rows.itertuples(), readings):
        if reading.error:  # listed, and the other pictures go on
            print(f"Grad-CAM skips {r.image}: {reading.error}")
            continue
        img, prepared, rec = reading.image, reading.prepared, reading.rec
        photo, _ = predictor.photo_cams(img, prepared, rec, range(len(LABELS)), method)
        cams[r.id] = {"photo": photo, "record": rec}
        ann = annotation_of(r.image)
        if ann is None:
            continue
        for k, label in enumerate(LABELS):
            s = energy_shares(photo[k], ann["paper_corners"], ann.get("lead_boxes"))
            limb = sum(v for n, v in s.items() if n in ("I", "II", "III", "aVR", "aVL", "aVF"))
            chest = sum(v for n, v in s.items() if n.startswith("V") and not n.endswith("_rhythm"))
            shares.append({"id": r.id, "label": label, "positive": getattr(r, f"y_{label}", np.nan),
                           "sheet": s["sheet"], "rhythm_strip": next((v for n, v in s.items() if n.endswith("_rhythm")), np.nan), "limb_leads": limb,
                           "chest_leads": chest})
    return cams, pd.DataFrame(shares)


def attention_table(shares: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Mean energy shares per label (on the images where that label is present, and on all)."""
    if shares.empty:
        return shares
    rows = []
    for label, part in shares.groupby("label", sort=False):
        pos = part[part["positive"] == 1]
        for name, sel in (("label present", pos), ("all images", part)):
            if len(sel):
                rows.append({"strategy": strategy, "label": label, "images": name, "n": len(sel),
                             **sel[["sheet", "rhythm_strip", "limb_leads", "chest_leads"]].mean().round(3).to_dict()})
    return pd.DataFrame(rows)


def overlay(img: np.ndarray, cam: np.ndarray, text: str, width: int = 420) -> np.ndarray:
    """RGB thumbnail of the photo with the CAM as a heat map, and a caption."""
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), cv2.COLORMAP_JET)
    mixed = cv2.addWeighted(img, 0.55, heat, 0.45, 0)
    s = width / mixed.shape[1]
    small = cv2.resize(mixed, (width, int(mixed.shape[0] * s)), interpolation=cv2.INTER_AREA)
    cv2.putText(small, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def gallery_figure(pred: pd.DataFrame, cams: dict, label: str, n: int, path: Path, threshold: float = 0.5) -> Path:
    plt = pyplot()
    k = LABELS.index(label)
    fig, axes = plt.subplots(len(KINDS), n, figsize=(3.4 * n, 3.0 * len(KINDS)), squeeze=False)
    for r, kind in enumerate(KINDS):
        picks = pick_gallery(pred, label, kind, n, threshold)
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(picks) or picks.iloc[c]["id"] not in cams:
                if c == 0:
                    ax.set_title(f"{label} {kind}: none", fontsize=8)
                continue
            row = picks.iloc[c]
            img = read_image(row["image"]).image
            ax.imshow(overlay(img, cams[row["id"]]["photo"][k], f"{label} {kind} p={row[label]:.2f}"))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
