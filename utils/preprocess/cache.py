"""Each picture prepared once (raw, roi_clahe or seg_rect) and stored at training size, with a record of what
was done: box, corners, method, fallback and reason. Training reads only this cache.

Pictures are written one file each as they are prepared (a killed build resumes picture by picture), then packed
into shards of PACK_SIZE (utils.core.packs), so that a run's saved output is a few hundred files, not tens of
thousands; `utils.core.packs.read_picture` reads either."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from utils.core import packs
from utils.core.atomic import atomic_write_bytes, atomic_write_text
from utils.core.imageio import ImageReadError, read_image
from utils.core.pool import pool_map
from utils.core.progress import tqdm
from utils.preprocess.detector import Detector
from utils.preprocess.ink import traces_box
from utils.preprocess.roi import (STRATEGIES, apply_clahe, classical_detect, crop_with_margin, quad_is_plausible,
    rectify, resize_long_side)
from utils.preprocess.sam import SamSegmenter
from utils.preprocess.seen import Seen


@dataclass(frozen=True)
class PrepSettings:
    strategy: str = "roi_clahe"
    long_side: int = 1024
    margin: float = 0.02
    crop_to: str = "sheet"      # roi_clahe keeps the sheet, or the traces (a package without the key: sheet)
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    yolo_weights: str = ""      # empty: classical detection only
    yolo_imgsz: int = 640
    yolo_conf: float = 0.5
    classical_conf: float = 0.6
    seg_method: str = "classical"  # classical or sam
    sam_checkpoint: str = ""
    sam_model_type: str = "vit_b"
    min_sheet_fraction: float = 0.05
    min_quad_cover: float = 0.6
    jpeg_quality: int = 95
    config_dir: str = ""

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r}: choose from {STRATEGIES}")
        if self.crop_to not in ("traces", "sheet"):
            raise ValueError(f"crop_to {self.crop_to!r}: choose traces or sheet")
        if self.seg_method not in ("classical", "sam"):
            raise ValueError(f"seg_method {self.seg_method!r}: choose classical or sam")


_MODELS: dict = {}


def load_models(s: PrepSettings, device: str = "cpu"):
    """Detector and segmenter on a torch device ("cpu", "cuda", "cuda:1"), loaded once per process for each set of
    model settings and device (a later strategy or another detector gets its own, never the first one's)."""
    key = (s.yolo_weights, s.config_dir, s.yolo_imgsz,
           s.sam_checkpoint if s.strategy == "seg_rect" and s.seg_method == "sam" else "", s.sam_model_type, device)
    if key not in _MODELS:
        det = sam = None
        if s.yolo_weights:
            yolo_device = "cpu" if device == "cpu" else device.split(":")[1] if ":" in device else "0"  # its naming
            det = Detector(Path(s.yolo_weights), Path(s.config_dir or "."), s.yolo_imgsz, yolo_device)
        if key[3]:
            sam = SamSegmenter(s.sam_checkpoint, s.sam_model_type, device)
        _MODELS[key] = (det, sam)
    return _MODELS[key]


def find_sheet(img: np.ndarray, s: PrepSettings, detector=None, seen: Seen | None = None) -> dict:
    """The sheet's box: YOLO when confident, else the classical finder when confident, else None (and why). `seen`:
    the picture's shared findings (utils/preprocess/seen.py), when a caller holds them."""
    h, w = img.shape[:2]
    tried = []
    if detector is not None:
        found = detector(img)
        if found["box"] is not None and found["confidence"] >= s.yolo_conf:
            found["reason"] = ""
            return found
        tried.append(f"yolo confidence {found['confidence']:.2f} < {s.yolo_conf}")
    found = seen.sheet() if seen is not None else classical_detect(img)
    if found["box"] is not None and found["confidence"] >= s.classical_conf:
        bw, bh = found["box"][2] - found["box"][0], found["box"][3] - found["box"][1]
        if bw * bh >= s.min_sheet_fraction * w * h:
            found["reason"] = "; ".join(tried)
            return found
        tried.append(f"classical box covers {bw * bh / (w * h):.1%} of the picture")
    else:
        tried.append(f"classical confidence {found['confidence']:.2f} < {s.classical_conf}")
    return {"box": None, "corners": None, "confidence": 0.0, "method": "none", "reason": "; ".join(tried)}


def prepare(img: np.ndarray, s: PrepSettings, detector=None, segmenter=None, seen: Seen | None = None
            ) -> tuple[np.ndarray, dict]:
    """Apply a strategy; a step that would lose the sheet falls back to the safer strategy and says so. `seen`: the
    picture's shared findings (utils/preprocess/seen.py), so what another stage found here is not found again."""
    seen = seen.of(img) if seen is not None else None
    whole = [0, 0, int(img.shape[1]), int(img.shape[0])]
    rec = {"strategy": s.strategy, "applied": s.strategy, "method": "none", "confidence": None, "box": None,
           "corners": None, "window": whole, "homography": None, "fallback": "", "reason": ""}  # window: what is read
    if s.strategy == "raw":
        return resize_long_side(img, s.long_side), rec
    found = find_sheet(img, s, detector, seen)
    rec.update(method=found["method"], confidence=found["confidence"], box=found["box"], reason=found["reason"])
    if s.strategy == "roi_clahe" and s.crop_to == "traces":
        return crop_traces(img, s, found, rec, seen)
    if found["box"] is None:
        rec.update(applied="raw", fallback="raw")
        return resize_long_side(apply_clahe(img, s.clahe_clip, s.clahe_tiles), s.long_side), rec
    if s.strategy == "seg_rect":
        if segmenter is not None:
            corners, how = segmenter.corners(img, found["box"]), "sam"
        else:
            corners = found.get("corners") or (seen.sheet() if seen is not None else classical_detect(img))["corners"]
            how = "classical"
        ok, why = quad_is_plausible(corners, found["box"], s.min_quad_cover) if corners else (False, "no corners")
        if ok:
            out, hom = rectify(img, corners)
            quad = np.asarray(corners, float)
            rec.update(corners=np.round(corners, 1).tolist(), homography=np.round(hom, 6).tolist(),
                       method=f"{found['method']}+{how}",
                       window=[int(max(0, np.floor(quad[:, 0].min()))), int(max(0, np.floor(quad[:, 1].min()))),
                               int(min(whole[2], np.ceil(quad[:, 0].max()))),
                               int(min(whole[3], np.ceil(quad[:, 1].max())))])
            return resize_long_side(apply_clahe(out, s.clahe_clip, s.clahe_tiles), s.long_side), rec
        rec.update(applied="roi_clahe", fallback="roi_clahe", reason="; ".join(filter(None, [rec["reason"], why])))
    crop, window = crop_with_margin(img, found["box"], s.margin)
    rec["window"] = window
    return resize_long_side(apply_clahe(crop, s.clahe_clip, s.clahe_tiles), s.long_side), rec


def crop_traces(img: np.ndarray, s: PrepSettings, found: dict, rec: dict, seen: Seen | None = None
                ) -> tuple[np.ndarray, dict]:
    """roi_clahe keeping the traces: the region the rows of traces fill on the picture; where no rows of traces are
    found, the sheet with its margin as before (or the whole picture when no sheet was found either), and the record
    says why. The traces are looked for on the whole picture, not inside the sheet's box: a sheet box that cuts the
    page would cut them (measured: 19 of 20 synthetic report photos kept whole this way, 13 inside the sheet)."""
    box, why = traces_box(img, ink=seen.ink if seen is not None else None)
    if box is not None:
        rec.update(method=f"{found['method']}+traces", traces_box=[round(v, 1) for v in box])
        crop, window = crop_with_margin(img, box, 0.0)  # the traces' own padding
    elif found["box"] is not None:
        rec["reason"] = "; ".join(filter(None, [rec["reason"], f"traces: {why}"]))
        crop, window = crop_with_margin(img, found["box"], s.margin)
    else:
        rec.update(applied="raw", fallback="raw", reason="; ".join(filter(None, [rec["reason"], f"traces: {why}"])))
        return resize_long_side(apply_clahe(img, s.clahe_clip, s.clahe_tiles), s.long_side), rec
    rec["window"] = window
    return resize_long_side(apply_clahe(crop, s.clahe_clip, s.clahe_tiles), s.long_side), rec


def safe_name(sample_id: str) -> str:
    """A file name for any id (ids carry ':' and '/'); a short hash keeps distinct ids distinct."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)[-80:]
    return f"{base}-{hashlib.sha1(sample_id.encode()).hexdigest()[:8]}"


class Replay:
    """What the models said of one picture on the GPU, answered again in a CPU worker: the detector's result (a
    callable, as Detector) and the segmenter's corners (`corners(img, box)`, as SamSegmenter)."""

    def __init__(self, found: dict):
        self.found = found

    def __call__(self, img: np.ndarray) -> dict:
        return dict(self.found["det"])

    def corners(self, img: np.ndarray, box) -> list | None:
        return self.found["corners"]


def models_on_device(todo: list, s: PrepSettings, device: str, batch: int = 16, progress: bool = True) -> dict:
    """The detector (in batches of pictures of one shape) and SAM run once per picture on `device` in this process,
    the pictures read by threads: id -> what they found, for the CPU workers to replay. Unreadable pictures are left
    to the workers, which record why."""
    from concurrent.futures import ThreadPoolExecutor


    det, seg = load_models(s, device)
    found = {}

    def read(item):
        try:
            return item[1], read_image(item[2]).image
        except Exception:  # noqa: BLE001 - an unreadable picture: its worker reads it again and records why
            return item[1], None

    with ThreadPoolExecutor(4) as pool, tqdm(total=len(todo), desc=f"{s.strategy} models on {device}",
                                             disable=not progress) as bar:
        for start in range(0, len(todo), batch):
            pictures = [(i, img) for i, img in pool.map(read, todo[start:start + batch]) if img is not None]
            by_shape: dict = {}
            for i, img in pictures:
                by_shape.setdefault(img.shape, []).append((i, img))
            for group in by_shape.values():
                dets = det.batch([img for _, img in group]) if det is not None else [None] * len(group)
                for (i, img), d in zip(group, dets):
                    found[i] = {"det": d, "corners": None}
                    if seg is not None:
                        box = find_sheet(img, s, Replay(found[i]) if d is not None else None)["box"]
                        found[i]["corners"] = seg.corners(img, box) if box is not None else None
            bar.update(len(todo[start:start + batch]))
    return found


def _work(args) -> dict:
    s, sample_id, image, out_dir, found = args
    rec = {"id": sample_id, "source_image": image, "ok": False, "error": ""}
    try:
        pic = read_image(image)
        img = pic.image
        if found is None:
            det, seg = load_models(s)
        else:  # the models ran on the GPU: the worker replays what they found
            det = Replay(found) if found["det"] is not None else None
            seg = Replay(found) if s.strategy == "seg_rect" and s.seg_method == "sam" else None
        out, info = prepare(img, s, det, seg)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        path = Path(out_dir) / "images" / f"{safe_name(sample_id)}.jpg"
        atomic_write_bytes(path, buf.tobytes())
        rec.update(info, ok=True, cached=str(path), width=out.shape[1], height=out.shape[0],
                   source_width=img.shape[1], source_height=img.shape[0], warning="; ".join(pic.warnings))
    except ImageReadError as exc:  # a failed picture is recorded and listed, never the end of the run
        rec["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


PACK_SIZE = 2000  # cached pictures per shard: about 0.4 GB at the kaggle profile's 0.19 MB each


def pack_cache(out_dir: Path, done: dict[str, dict], log: Path, size: int = PACK_SIZE) -> None:
    """The loose pictures of `done` packed into new shards of `size`, the records (records.jsonl, `done`) pointing at
    them, then the loose files removed. A shard no record points at (a kill between writing it and the records) is
    removed first: its pictures are still loose and go into a shard again."""
    out_dir = Path(out_dir)
    pointed = {str(packs.split(r["cached"])[0]) for r in done.values() if r.get("ok") and packs.is_ref(r["cached"])}
    for shard in out_dir.glob("pack-*.zip"):
        if str(shard) not in pointed:
            shard.unlink()
    loose = [r for r in done.values() if r.get("ok") and not packs.is_ref(r["cached"])]
    k = max((int(p.stem.split("-")[1]) + 1 for p in out_dir.glob("pack-*.zip")), default=0)
    for start in range(0, len(loose), size):
        group = loose[start:start + size]
        refs = packs.write(out_dir / f"pack-{k:03d}.zip", [Path(r["cached"]) for r in group])
        files = [r["cached"] for r in group]
        for r in group:
            r["cached"] = refs[r["cached"]]
        atomic_write_text(log, "".join(json.dumps(r) + "\n" for r in done.values()))  # the records, then the files
        for f in files:
            Path(f).unlink()
        k += 1


def uses_models(s: PrepSettings) -> bool:
    return s.strategy != "raw" and bool(s.yolo_weights or (s.strategy == "seg_rect" and s.seg_method == "sam"))


def build_cache(items: pd.DataFrame, s: PrepSettings, out_dir: Path, workers: int = 0,
                progress: bool = True, model_device: str = "cpu") -> pd.DataFrame:
    """Prepare every (id, image) not yet cached; returns the table of all records (also cache.csv).

    With a GPU as `model_device`, the detector and SAM run there first, in this process (`models_on_device`), and
    the CPU workers do the rest (reading, cropping or rectifying, CLAHE, writing) with what they found; on the CPU
    every worker runs its own models."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_file = out_dir / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != asdict(s):
        raise ValueError(f"{out_dir} was built with other preprocessing settings; use another folder")
    atomic_write_text(settings_file, json.dumps(asdict(s), indent=2))
    log = out_dir / "records.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if r.get("ok") and packs.exists(r["cached"]):
                done[r["id"]] = r
    todo = [(s, i, p, str(out_dir), None) for i, p in zip(items["id"], items["image"]) if i not in done]
    if model_device != "cpu" and uses_models(s) and todo:
        found = models_on_device(todo, s, model_device, progress=progress)
        todo = [(s, i, p, o, found.get(i)) for s, i, p, o, _ in todo]
    with log.open("a") as fh:
        for r in pool_map(_work, todo, workers, f"cache {s.strategy}", progress=progress, serial_below=8):
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            done[r["id"]] = r
    pack_cache(out_dir, done, log, PACK_SIZE)
    table = pd.DataFrame([done[i] for i in items["id"] if i in done])
    atomic_write_text(out_dir / "cache.csv", table.to_csv(index=False))
    return table
