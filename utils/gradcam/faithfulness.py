"""Which CAM to trust, measured: ROAD (Remove And Debias; Rong et al., ICML 2022), pytorch-grad-cam's metric.

For a picture, a label and a CAM, ROAD removes the pixels the map ranks highest (most relevant first) and, apart, the
pixels it ranks lowest (least relevant first), filling them by noisy linear imputation (no new edges for the model to
react to), at several percentiles; the score is half the mean difference of the label's probability,
(least-first - most-first) / 2: high when removing what the map points at costs the model its confidence and
removing the rest does not. A random map scores about 0. Each method's maps are the ensemble's (every fold averaged)
and the model scored is the ensemble (its folds' logits averaged).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from utils.core.progress import tqdm

from utils.core.cam import CAM_METHODS, MeanLogits, cam_maps
from utils.core.labels import LABELS
from utils.core.pool import pool_map, resolve_workers
from utils.ensemble.predictor import worker_predictor

PERCENTILES = (20, 40, 60, 80)
RANDOM = "random map"  # the baseline every method must beat


class LabelProbability:
    """A metric's target: the sigmoid probability of one label (the labels are not exclusive: no softmax)."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output[..., self.k].float())


def road_score(model: torch.nn.Module, x: torch.Tensor, cam: np.ndarray, k: int,
               percentiles=PERCENTILES) -> float:
    """ROAD combined score of one map (H, W at the input's size) for label k on one picture x (1, 3, H, W)."""
    from pytorch_grad_cam.metrics.road import ROADCombined

    metric = ROADCombined(percentiles=list(percentiles))
    return float(np.asarray(metric(x, cam[None].astype(np.float32), [LabelProbability(k)], model)).ravel()[0])


def random_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def scored_rows(pred: pd.DataFrame, label: str, n: int) -> pd.DataFrame:
    """The pictures a label's maps are scored on: those that show it (labels known), most probable first, else
    the most probable ones."""
    part = pred[pred[f"y_{label}"] == 1] if f"y_{label}" in pred else pred
    return part.sort_values(label, ascending=False, kind="stable").head(n)


def map_set(predictor, label: str, image: str, seed: int, methods=CAM_METHODS,
            tensors: dict | None = None) -> list[dict] | str:
    """ROAD scores of one picture's maps for one label (every method and the random map), or why the picture could
    not be read. The imputation's noise is seeded by `seed`, so a map set scores the same in any process and order.
    `tensors`: the model inputs of pictures already read (by path), kept across map sets."""
    tensors = {} if tensors is None else tensors
    if image not in tensors:
        reading = next(predictor.read([image], keep=True))
        if reading.error:
            return reading.error
        tensors[image] = predictor.tensor(reading.prepared).to(predictor.device)
    x, k = tensors[image], LABELS.index(label)
    ensemble = MeanLogits(predictor.models).eval()
    maps = {m: cam_maps(predictor.models, x, m, [k])[0] for m in methods}
    maps[RANDOM] = random_map(tuple(x.shape[-2:]), seed)
    out = []
    for m, cam in maps.items():
        torch.manual_seed(seed)
        out.append({"label": label, "method": m, "road": road_score(ensemble, x, cam, k)})
    return out


_TENSORS: dict = {}  # in a worker process: the model inputs of the pictures it has read, by (package, path)


def _map_set_in_worker(job) -> list[dict] | str:
    """map_set in a pool's worker, with its own copy of the package (utils.ensemble.predictor.worker_predictor)."""
    spec, label, image, seed, methods = job
    return map_set(worker_predictor(spec, folds=True), label, image, seed, methods, _TENSORS.setdefault(spec, {}))


def faithfulness(predictor, pred: pd.DataFrame, n: int, methods=CAM_METHODS, seed: int = 0,
                 workers: int = 0) -> pd.DataFrame:
    """One row per (label, picture, method and the random map): the ROAD score. On a CPU the map sets are scored in
    worker processes, one per core (`workers`, 0: one per usable core): the imputation is a sparse solve on one core,
    most of a map set's time. A picture that cannot be read is listed, and the others go on."""
    todo = [(label, r) for label in LABELS for r in scored_rows(pred, label, n).itertuples()]
    jobs = [(label, str(r.image), seed + i) for i, (label, r) in enumerate(todo)]
    workers = resolve_workers(workers) if predictor.device.type == "cpu" else 1
    if workers > 1 and len(jobs) > 1:
        results = pool_map(_map_set_in_worker, [(predictor.spec, *job, tuple(methods)) for job in jobs],
                           min(workers, len(jobs)), desc="ROAD", unit="map set", serial_below=2)
    else:
        tensors: dict = {}
        results = (map_set(predictor, *job, methods, tensors) for job in tqdm(jobs, desc="ROAD", unit="map set"))
    rows = []
    for (label, r), result in zip(todo, results):
        if isinstance(result, str):
            print(f"faithfulness skips {r.image}: {result}")
            continue
        rows += [{**row, "id": r.id} for row in result]
    return pd.DataFrame(rows, columns=["label", "id", "method", "road"])


def faithfulness_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean ROAD per method (rows, most faithful first) and label (columns), with the mean over labels and the
    pictures scored."""
    if scores.empty:
        return pd.DataFrame(columns=["method", *LABELS, "mean", "pictures"])
    wide = scores.pivot_table(index="method", columns="label", values="road", aggfunc="mean")
    wide = wide.reindex(columns=[k for k in LABELS if k in wide.columns])
    wide["mean"] = wide.mean(axis=1)
    wide["pictures"] = scores.groupby("method")["id"].nunique()
    return wide.sort_values("mean", ascending=False).round(4).reset_index()


def most_faithful(table: pd.DataFrame | None, default: str = "gradcam") -> str:
    """The method with the highest mean ROAD above the random map's; `default` when none is measured or beats it."""
    if table is None or table.empty:
        return default
    methods = table[table["method"] != RANDOM]
    floor = table.loc[table["method"] == RANDOM, "mean"]
    best = methods.iloc[0] if len(methods) else None
    if best is None or (len(floor) and best["mean"] <= floor.iloc[0]):
        return default
    return str(best["method"])
