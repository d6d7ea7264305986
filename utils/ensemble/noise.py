"""How far a decision moves when the same page is only saved again: each label's re-encoding noise.

A page that a user re-saves, converts or shrinks is the same ECG, yet its scores move a little: JPEG blocks, WebP's
smoothing, a CMYK round trip and a 0.9 scale change the pixels the crop, the digitiser and the model read. A
decision whose score lies that close to its threshold may be decided otherwise by a copy of the same page. Step 05
measures the noise on some of the run's test pictures (`noise_pictures`): each picture read as it is and as each
variant below, through the package's own pass, and for each label the `QUANTILE` of how far the decision's own
quantity moved (`Predictor.margins`: the calibrated probability against its F1 threshold, or the two readers' blend
against theirs). The package keeps it (`noise`), and a prediction row names the labels decided within it
(`near_threshold`) with a warning. No labels are used: the test pictures' own scores against themselves.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.ensemble.predictor import Predictor, add_to_package

VARIANTS = ("jpeg q75", "webp q80", "cmyk jpeg q90", "scaled 0.9")
QUANTILE = 0.95


def variant(img: np.ndarray, name: str) -> np.ndarray:
    """The BGR picture saved again as `name` (one of VARIANTS) and read back."""
    if name == "scaled 0.9":
        h, w = img.shape[:2]
        return cv2.resize(img, (round(w * 0.9), round(h * 0.9)), interpolation=cv2.INTER_AREA)
    if name == "cmyk jpeg q90":
        buf = io.BytesIO()
        Image.fromarray(img[..., ::-1]).convert("CMYK").save(buf, "JPEG", quality=90)
        return np.ascontiguousarray(np.asarray(Image.open(buf).convert("RGB"))[..., ::-1])
    kind, quality = {"jpeg q75": (".jpg", cv2.IMWRITE_JPEG_QUALITY), "webp q80": (".webp", cv2.IMWRITE_WEBP_QUALITY)}[name]
    ok, data = cv2.imencode(kind, img, [quality, int(name[-2:])])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {name} copy")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def reencoding_noise(predictor, pictures: list, quantile: float = QUANTILE) -> tuple[dict, pd.DataFrame]:
    """The package's `noise` entry measured on these pictures (files or BGR arrays), and a table per label: how far
    the decisions moved (median, the quantile kept, the largest) and how many flipped. A picture that cannot be read,
    or one of whose copies cannot, is left out and counted."""
    items = []
    for p in pictures:
        try:
            img = p if isinstance(p, np.ndarray) else read_image(p).image
        except ImageReadError:  # left out, and counted in the entry
            continue
        items += [img] + [variant(img, v) for v in VARIANTS]
    readings = list(predictor.read(items, desc="re-encoding noise"))
    step = 1 + len(VARIANTS)
    moved, flipped, used = [], np.zeros(len(LABELS), int), 0
    for k in range(0, len(readings), step):
        group = readings[k:k + step]
        if any(r.error for r in group):
            continue
        m = np.stack([predictor.margins(r.fold_probs[:, None], None if r.signal_probs is None
                                        else r.signal_probs[None])[0] for r in group])
        moved.append(np.abs(m[1:] - m[0]))
        flipped += ((m[1:] >= 0) != (m[0] >= 0)).sum(axis=0)
        used += 1
    if not used:
        raise ValueError(f"re-encoding noise: none of the {len(pictures)} picture(s) and their copies could be read")
    moved = np.concatenate(moved)
    band = np.quantile(moved, quantile, axis=0)
    entry = {"variants": list(VARIANTS), "quantile": float(quantile), "pictures": int(used),
             "band": [round(float(b), 5) for b in band]}
    table = pd.DataFrame({"label": LABELS, "median_moved": np.median(moved, axis=0).round(4),
                          f"q{quantile:.2f}_moved (band)": band.round(4), "largest_moved": moved.max(axis=0).round(4),
                          "decisions_flipped": [f"{n} of {len(moved)}" for n in flipped]})
    return {**entry, "left_out": len(pictures) - used}, table


def noise_for(model_file, pictures: list, n: int, detector: str = "", device: str = "auto",
              sam_checkpoint: str = "") -> pd.DataFrame | str:
    """Step 05: the re-encoding noise measured on the first `n` pictures through the package, kept in it as 'noise';
    the table per label, or why there is none."""
    if n <= 0 or not len(pictures):
        return "noise_pictures is 0 (or there are no test pictures): the re-encoding noise is not measured"
    entry, table = reencoding_noise(Predictor(model_file, detector, device, sam_checkpoint), list(pictures)[:n])
    add_to_package(model_file, "noise", entry)
    print(f"re-encoding noise on {entry['pictures']} test picture(s) x {len(VARIANTS)} copies "
          f"({', '.join(VARIANTS)}), kept in {model_file}" + (f"; {entry['left_out']} left out (unreadable)"
                                                           if entry["left_out"] else ""))
    return table
