"""Explore where the ensemble looks: any picture (an id of the run, a gallery category, or a new photo's path), any
label, one fold or the ensemble, any CAM method, and each strategy the run trained, side by side.

    explore(predictors, pred)          # in a live notebook: menus; under papermill or without widgets: one figure

Each strategy is a row of three panels: the original photo with the CAM placed back through the crop or the
rectification (and the lead boxes where the synthesizer recorded them), the model's input with the same CAM, and the
five probabilities against their decision thresholds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.core.cam import CAM_METHODS, heat_overlay
from utils.core.figures import pyplot
from utils.core.imageio import ImageReadError, read_image
from utils.core.labels import LABELS
from utils.core.progress import is_batch
from utils.core.runs import find_step_dir
from utils.ensemble.predictor import Predictor
from utils.gradcam.analysis import KINDS, annotation_of, pick_gallery

ENSEMBLE = "ensemble"


@dataclass
class Subject:
    id: str
    image: np.ndarray          # BGR, as read
    path: str
    truth: dict | None         # label -> 0/1 where the run knows it
    annotation: dict | None    # the synthesizer's record (sheet corners, lead boxes), when there is one


def thresholds_of(predictor) -> np.ndarray:
    """The package's F1 thresholds act on calibrated probabilities (the soft vote); other votes split at 0.5."""
    return np.asarray(predictor.calibration.thresholds if predictor.pkg["vote"] == "soft" else [0.5] * len(LABELS))


def gallery_choices(pred: pd.DataFrame | None) -> list[str]:
    """The gallery categories a picture can be named by: 'MI:TP:0' is the most confident true positive of MI."""
    if pred is None or not all(f"y_{k}" in pred for k in LABELS):
        return []
    return [f"{label}:{kind}:{i}" for label in LABELS for kind in KINDS for i in range(3)]


def resolve_picture(picture, pred: pd.DataFrame | None = None, thresholds=None) -> Subject:
    """An id of the run's test predictions, a gallery category ('MI:FP' or 'MI:FP:1'), or a picture's path."""
    text = str(picture)
    row = None
    if pred is not None and text in set(pred["id"].astype(str)):
        row = pred[pred["id"].astype(str) == text].iloc[0]
    elif pred is not None and text.count(":") in (1, 2) and text.split(":")[0] in LABELS:
        label, kind, *rank = text.split(":")
        i = int(rank[0]) if rank and rank[0].isdigit() else 0
        th = 0.5 if thresholds is None else float(thresholds[LABELS.index(label)])
        picks = pick_gallery(pred, label, kind, i + 1, th)
        if len(picks) <= i:
            raise ValueError(f"picture {text!r}: the run has {len(picks)} {label} {kind} picture(s)")
        row = picks.iloc[i]
    if row is not None:
        path = str(row["image"])
        truth = {k: row[f"y_{k}"] for k in LABELS if f"y_{k}" in row and not pd.isna(row[f"y_{k}"])} or None
        return Subject(str(row["id"]), _read(path), path, truth, annotation_of(path))
    if not Path(text).exists() and not Path(text).is_symlink():
        raise FileNotFoundError(f"picture {text!r}: not a file, not an id of the run's test pictures, and not a "
                                f"gallery category such as 'MI:TP' or 'AF:FP:1'")
    return Subject(Path(text).stem, _read(text), text, None, annotation_of(text))


def _read(path: str) -> np.ndarray:
    try:
        return read_image(path).image
    except ImageReadError as exc:
        raise ImageReadError(f"picture {path}: {exc}") from None


def strategy_packages(run_dir: Path) -> dict[str, Path]:
    """The run's ensemble and, where step 07 trained them, the other strategies' (the preprocessing table's runs of the
    same profile): strategy -> model.pt."""
    run_dir = Path(run_dir)
    found: dict[str, Path] = {}
    own = find_step_dir(run_dir, "05")
    candidates = [own / "model.pt"] if own else []
    for root in (run_dir.parent / "ablations").glob("*"):
        candidates += sorted(root.glob("baseline/05_*/model.pt")) + sorted(root.glob("prep-*/05_*/model.pt"))
    for path in candidates:
        if path.is_file():
            strategy = torch.load(path, map_location="cpu", weights_only=True)["prep"]["strategy"]
            found.setdefault(strategy, path)
    return found


def strategy_predictors(run_dir: Path, predictor, detector: str = "", device: str = "auto",
                        sam_checkpoint: str = "") -> dict:
    """strategy -> a Predictor of each package strategy_packages finds; the run's own ensemble is `predictor`."""
    own = Path(predictor.package)
    return {s: predictor if p.resolve() == own.resolve() else Predictor(p, detector, device, sam_checkpoint)
            for s, p in strategy_packages(run_dir).items()}


def _cams(predictor, pic: Subject, k: int | None, fold, method: str):
    """(label index, CAM on the photo, CAM on the input, the model's input picture, preparation record, the fold's or
    the ensemble's probabilities); k None: the most probable label."""
    reading = predictor.read_one(pic.image)
    prepared, rec = reading.prepared, reading.rec
    probs = reading.fold_probs.mean(0) if fold == ENSEMBLE else reading.fold_probs[int(fold)]
    k = int(np.argmax(probs)) if k is None else k
    folds = None if fold == ENSEMBLE else [int(fold)]
    photo, inputs = predictor.photo_cams(pic.image, prepared, rec, [k], method, folds)
    return k, photo[0], inputs[0], predictor.input.rgb(prepared), rec, probs


def explore_figure(predictors: dict, picture, label: str | None = None, fold=ENSEMBLE, method: str = "gradcam",
                   pred: pd.DataFrame | None = None, path: Path | None = None):
    """The static view: one row per strategy (original photo with the CAM, model input with the CAM, probabilities
    against thresholds). Returns the matplotlib figure (and writes it to `path` when given)."""
    if method not in CAM_METHODS:
        raise ValueError(f"method {method!r}: choose from {', '.join(CAM_METHODS)}")
    first = next(iter(predictors.values()))
    pic = picture if isinstance(picture, Subject) else resolve_picture(picture, pred, thresholds_of(first))
    plt = pyplot()
    fig, axes = plt.subplots(len(predictors), 3, figsize=(16, 4.2 * len(predictors)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.25, 1.0, 0.6]})
    for row, (strategy, predictor) in zip(axes, predictors.items()):
        k, photo_cam, input_cam, model_rgb, rec, probs = _cams(predictor, pic, LABELS.index(label) if label else None,
                                                               fold, method)
        label = LABELS[k]  # the first strategy's most probable label, when none was named, for every row
        row[0].imshow(heat_overlay(pic.image, photo_cam))
        _lead_boxes(row[0], pic.annotation)
        row[0].set_title(f"{pic.id}: {label} on the photo ({strategy}, {method}, {fold}; crop: {rec['method']})",
                         fontsize=9)
        row[1].imshow(heat_overlay(model_rgb[..., ::-1].copy(), input_cam))
        row[1].set_title(f"the model's input ({model_rgb.shape[1]}x{model_rgb.shape[0]})", fontsize=9)
        _probabilities(row[2], probs, thresholds_of(predictor), pic.truth, k)
        for ax in row[:2]:
            ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def _lead_boxes(ax, annotation: dict | None) -> None:
    for name, box in ((annotation or {}).get("lead_boxes") or {}).items():
        quad = np.asarray(box["corners"], float)
        ax.plot(*np.vstack([quad, quad[:1]]).T, color="white", lw=0.7, alpha=0.8)
        ax.text(*quad[0], name, color="white", fontsize=6, va="bottom")


def _probabilities(ax, probs, thresholds, truth: dict | None, k: int) -> None:
    colours = ["#c33" if i == k else "#777" for i in range(len(LABELS))]
    ax.barh(LABELS[::-1], probs[::-1], color=colours[::-1])
    for i, t in enumerate(thresholds[::-1]):
        ax.plot([t, t], [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.set_xlim(0, 1)
    ax.set_title("probability | threshold" + ("\ntruth " + " ".join(f"{n}={int(v)}" for n, v in truth.items())
                                              if truth else ""), fontsize=8)


def widgets_live() -> bool:
    """Menus only where someone can use them: a live IPython kernel with ipywidgets, not a batch run (papermill under
    the runner, Kaggle's "Save & Run All")."""
    if is_batch():
        return False
    try:
        import ipywidgets  # noqa: F401 - Kaggle ships it; elsewhere it may be missing
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def explore(predictors: dict, pred: pd.DataFrame | None = None, picture=None, label: str | None = None,
            fold=ENSEMBLE, method: str = "gradcam", interactive: bool | None = None, save: Path | None = None):
    """Menus for picture, label, fold, method (and a path box for a new photo) in a live notebook; elsewhere the
    static figure of the given (or first) picture, written to `save` when given (and then shown from that file).
    Returns the menus (a widget box), the figure, or the saved figure as an image to show."""
    picture = picture if picture is not None else (pred["id"].iloc[0] if pred is not None and len(pred) else None)
    if picture is None:
        raise ValueError("explore: name a picture (an id, a gallery category or a path)")
    live = widgets_live() if interactive is None else interactive
    if not live or save is not None:
        fig = explore_figure(predictors, picture, label, fold, method, pred, save)
        if not live and save is None:
            return fig
        pyplot().close(fig)  # shown once, from its file (an open figure would be drawn again at the cell's end)
        if not live:
            return _shown(save)
    import ipywidgets as w
    from IPython.display import display

    first = next(iter(predictors.values()))
    ids = [] if pred is None else list(pred["id"].astype(str).head(300))
    choices = gallery_choices(pred) + ids
    pick = w.Dropdown(options=choices or [str(picture)], value=str(picture) if str(picture) in choices else None,
                      description="picture")
    path_box = w.Text(placeholder="or a photo's path, then Enter", description="path")
    label_box = w.Dropdown(options=["most probable", *LABELS], value=label or "most probable", description="label")
    fold_box = w.Dropdown(options=[ENSEMBLE, *[str(i) for i in range(len(first.models))]], value=str(fold),
                          description="fold")
    method_box = w.Dropdown(options=list(CAM_METHODS), value=method, description="method")
    out = w.Output()

    def draw(*_):
        out.clear_output(wait=True)
        with out:
            target = path_box.value.strip() or pick.value
            try:
                fig = explore_figure(predictors, target, None if label_box.value == "most probable" else
                                     label_box.value, fold_box.value, method_box.value, pred)
                display(fig)
                pyplot().close(fig)
            except (ValueError, FileNotFoundError) as exc:
                print(exc)

    for box in (pick, label_box, fold_box, method_box):
        box.observe(draw, names="value")
    path_box.on_submit(draw)
    box = w.VBox([w.HBox([pick, path_box]), w.HBox([label_box, fold_box, method_box]), out])
    display(box)
    draw()
    return box


def _shown(path: Path):
    try:
        from IPython.display import Image
    except ImportError:
        return Path(path)
    return Image(filename=str(path))
