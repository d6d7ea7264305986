"""YOLO paper detector (ultralytics), trained on the synthesizer's paper boxes, fully offline.

Offline pitfalls handled here: YOLO_OFFLINE must be the string 'true' before import; the dataset check wants a
font in YOLO_CONFIG_DIR (matplotlib's DejaVuSans is placed there as Arial.ttf); the AMP check's download fails
offline with a ConnectionError, which ultralytics catches and keeps AMP on (GPU only); a bare weights name downloads, so training starts from a .yaml or from a given file.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from utils.core.progress import tqdm

from utils.core.atomic import atomic_write_text
from utils.synth.textures import background, finish, lighting


def prepare_offline(config_dir: Path) -> None:
    """Environment for ultralytics without internet; call before importing it."""
    import matplotlib

    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "true"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (config_dir / name).exists():
            shutil.copy(font, config_dir / name)


def _yolo_line(ann: dict) -> str:
    cx, cy, w, h = ann["paper_box_yolo"]
    return f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"


def export_dataset(folders: list[Path], out: Path, n: int, imgsz: int, seed: int, negatives: float = 0.08,
                   val_fraction: float = 0.15) -> Path:
    """A YOLO dataset (images at imgsz, one 'paper' class) from synthesizer folders plus sheet-free negatives."""
    anns = []
    for folder in folders:
        anns += [(Path(folder), p) for p in sorted((Path(folder) / "annotations").glob("*.json"))]
    rng = np.random.default_rng(seed)
    picked = [anns[i] for i in rng.permutation(len(anns))[:n]]
    items = []
    for k, (folder, path) in enumerate(tqdm(picked, desc="YOLO dataset", unit="img")):
        ann = json.loads(path.read_text())
        if ann.get("split") == "test":
            continue  # held-out pictures stay held out
        img = cv2.imread(str(folder / ann["image"]))
        if img is None:
            continue
        items.append((f"p{k:06d}", img, _yolo_line(ann)))
    for k in range(int(len(items) * negatives)):
        h, w = (int(v) for v in rng.integers(300, 900, 2))
        bg, _ = background(rng, h, w)
        light, _ = lighting(rng, h, w, 1.0, 1)
        items.append((f"n{k:06d}", finish(bg, light, (1, 1, 1), 3.0, rng), ""))
    order = rng.permutation(len(items))
    n_val = max(1, int(len(items) * val_fraction))
    for rank, i in enumerate(order):
        name, img, label = items[i]
        split = "val" if rank < n_val else "train"
        s = imgsz / max(img.shape[:2])
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "images" / split / f"{name}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 92])
        (out / "labels" / split / f"{name}.txt").write_text(label)
    data = out / "data.yaml"
    atomic_write_text(data, f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: paper\n")
    return data


def _has_polars() -> bool:
    import importlib.util

    return importlib.util.find_spec("polars") is not None


def _trainer():
    """YOLO's detection trainer, reading its results.csv with pandas where polars is missing.

    Ultralytics reads results.csv with polars each time it saves a checkpoint, plots or not, and a GPU image may
    lack polars (a 54 MB wheel); pandas reads the same file into the same dict of columns."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class PaperTrainer(DetectionTrainer):
        def read_results_csv(self):
            if _has_polars():
                return super().read_results_csv()
            import pandas as pd

            try:
                return pd.read_csv(self.csv).to_dict(orient="list")
            except (OSError, ValueError):  # no results yet, as ultralytics' own reader allows
                return {}

    return PaperTrainer


def train_detector(data_yaml: Path, project: Path, model: str = "yolov8n.yaml", weights: str = "",
                   epochs: int = 30, imgsz: int = 640, batch: int = 16, device: str = "cpu", workers: int = 0,
                   seed: int = 42) -> Path:
    """Train from the model yaml (or from given weights); returns best.pt inside our run folder."""
    prepare_offline(Path(project) / "yolo_config")
    from ultralytics import YOLO

    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"YOLO weights {weights} not found (set by 'yolo_weights')")
    if not weights and not str(model).endswith(".yaml"):
        raise ValueError(f"yolo_model {model!r}: give a .yaml to train from scratch offline, or yolo_weights")
    net = YOLO(weights or model)
    net.train(trainer=_trainer(), data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device=device,
              workers=workers, project=str(project), name="detector", exist_ok=True, amp=device != "cpu",
              plots=_has_polars(), seed=seed, deterministic=True, verbose=False, fliplr=0.0, mosaic=0.5)
    best = Path(project) / "detector" / "weights" / "best.pt"
    if not best.is_file():
        raise RuntimeError(f"YOLO training finished without {best}")
    return best


class Detector:
    """A trained YOLO paper detector: the most confident box per picture."""

    def __init__(self, weights: Path, config_dir: Path, imgsz: int = 640, device: str = "cpu"):
        prepare_offline(config_dir)
        from ultralytics import YOLO

        if not Path(weights).is_file():
            raise FileNotFoundError(f"YOLO weights {weights} not found (set by 'yolo_weights')")
        self.model, self.imgsz, self.device = YOLO(str(weights)), imgsz, device

    def __call__(self, img: np.ndarray) -> dict:
        return self.batch([img])[0]

    def batch(self, imgs: list[np.ndarray]) -> list[dict]:
        """The most confident box of each picture, in one forward pass on the model's device (pictures of one
        shape: ultralytics letterboxes a batch of mixed shapes otherwise than one picture alone)."""
        out = []
        for res in self.model.predict(list(imgs), imgsz=self.imgsz, device=self.device, verbose=False, max_det=1):
            if res.boxes is None or len(res.boxes) == 0:
                out.append({"box": None, "corners": None, "confidence": 0.0, "method": "yolo"})
                continue
            box = res.boxes.xyxy[0].cpu().numpy().astype(float).tolist()
            out.append({"box": box, "corners": None, "confidence": round(float(res.boxes.conf[0]), 3),
                        "method": "yolo"})
        return out