"""How the packaged ensemble degrades as pictures get worse: one artefact swept at a time, the rest at their defaults.

    python -m utils.ablations.robustness --model A/model.pt [--model B/model.pt] [--sweeps crumple,creases]
        [--profile demo] [--images 150] [--out outputs/robustness]

(step 07 runs every sweep on its baseline; the command scores any packaged models on the same sets, side by side).

Every level of a sweep holds the same ECGs (same seed and index: same waveform, labels, page, placement, lighting
pattern); only the swept artefact's strength differs, so the curve compares like with like. The test ECGs are drawn
with their own seed, apart from every training image.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from utils.core.atomic import atomic_write_text, new_folder
from utils.core.cli import add_debug, fail, run_cli
from utils.core.config import resolve_config
from utils.core.figures import pyplot, thumbnail
from utils.core.keys import settings_key, split_list
from utils.core.labels import LABELS
from utils.core.metrics import bootstrap_auroc
from utils.core.paths import REPO_ROOT, resolve_paths
from utils.ensemble.evaluate import predict_rows
from utils.ensemble.predictor import Predictor
from utils.ensemble.vote import combine
from utils.preprocess.step import detector_for
from utils.synth.dataset import generate_dataset
from utils.synth.generate import ARTEFACT_CONTROLS, SynthSettings

# (setting of SynthSettings, levels, what a level means). Strength 1 is the synthesizer's default mix.
SWEEPS = {
    "perspective": ("perspective", (0.0, 1.0, 2.0, 3.0),
                    "x default: rotation SD 4 deg, keystone up to 10%, corner jitter 2.5%, bow and lifted corner"),
    "shadow": ("shadow", (0.0, 1.0, 2.0, 3.0), "x default: light gradient, vignette and shadow darkness"),
    "blur": ("blur", (0.0, 1.0, 2.0, 4.0), "x default: defocus sigma up to 1.2 px per 2000 px, motion blur"),
    "jpeg": ("jpeg_quality", (95, 50, 20, 8), "JPEG quality (default: drawn per picture, 60-95)"),
    "crumple": ("crumple", (0.0, 1.0, 2.0, 3.0), "crumpled paper: facets shaded by a light from any side, creases "
                "where it bent (0: a flat sheet, 3: heavy)"),
    "creases": ("creases", (0, 2, 4, 8), "long crease lines in any direction, on a lightly crumpled sheet (crumple 1)"),
}
SWEEP_BASE = {"creases": {"crumple": 1.0}, "crumple": {"crumple_rate": 0.0}}  # what a sweep sets beside its own key
DEFAULT_LEVEL = {"perspective": 1.0, "shadow": 1.0, "blur": 1.0}  # the level whose pictures are the default set's
SEED_OFFSET = 7919  # test ECGs of the sweeps are drawn apart from every training and test picture of the run


def sweep_settings(cfg) -> SynthSettings:
    return SynthSettings.from_config(cfg, "photo", SEED_OFFSET, jpeg_quality=0)


def plan_sets(cfg, sweeps=tuple(SWEEPS)) -> list[dict]:
    """The sets to make: the default mix, each sweep's other levels, and a scan-like set of the same size."""
    base = sweep_settings(cfg)
    sets = [{"sweep": "default", "level": np.nan, "settings": base}]
    for name in sweeps:
        key, levels, _ = SWEEPS[name]
        for level in levels:
            settings = replace(base, **SWEEP_BASE.get(name, {}), **{key: level})
            if same_pictures(settings, base):
                continue  # the default set is this level
            sets.append({"sweep": name, "level": level, "settings": settings})
    sets.append({"sweep": "style", "level": np.nan, "settings": replace(base, style="scan")})
    return sets


def same_pictures(a: SynthSettings, b: SynthSettings) -> bool:
    """Settings that draw the same pictures (an artefact left to the severity equals it given explicitly)."""
    rest = lambda s: {k: v for k, v in s.to_dict().items() if k not in ARTEFACT_CONTROLS}  # noqa: E731
    return a.artefact_strengths() == b.artefact_strengths() and rest(a) == rest(b)


def set_folder(data_root: Path, settings: SynthSettings, n: int) -> Path:
    key = settings_key({"s": settings.to_dict(), "t": n})
    return Path(data_root) / f"robustness-{settings.style}-{key}"


def make_sets(cfg, data_root: Path, n: int, workers: int = 0, progress: bool = True,
              sweeps=tuple(SWEEPS)) -> list[dict]:
    """Make (or reuse) every set; returns the plan with each set's folder."""
    if n < 4:
        raise ValueError(f"robustness_images must be at least 4 (an AUROC needs positives and negatives), got {n}")
    unknown = sorted(set(sweeps) - set(SWEEPS))
    if unknown:
        raise ValueError(f"unknown sweep(s) {unknown}; choose from {list(SWEEPS)}")
    out = []
    for item in plan_sets(cfg, sweeps):
        folder = set_folder(data_root, item["settings"], n)
        done = (folder / "test_labels.csv").is_file()  # a finished set: no empty progress bar
        info = generate_dataset(folder, item["settings"], n_test=n, workers=workers, progress=progress and not done)
        out.append({**item, "folder": str(folder), "failed": info["failed"]})
    return out


def set_rows(folder: Path) -> pd.DataFrame:
    labels = pd.read_csv(Path(folder) / "test_labels.csv", dtype={"id": str})
    labels["image"] = [str(Path(folder) / "test" / f"{i}.jpg") for i in labels["id"]]
    return labels


def model_key(model_file: Path) -> str:
    """Changes whenever the package is written again (a re-trained baseline never meets old predictions)."""
    st = Path(model_file).stat()
    return settings_key(f"{Path(model_file).resolve()}:{st.st_size}:{st.st_mtime_ns}", 8)


def predict_sets(predictor, sets: list[dict], cache_dir: Path, model_file: Path) -> list[dict]:
    """Per-fold probabilities of every set, saved per set and model so a re-run predicts only what is missing."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = model_key(model_file)
    out = []
    for item in sets:
        file = cache_dir / f"{Path(item['folder']).name}-model-{key}.npz"
        rows = set_rows(Path(item["folder"]))
        if file.is_file():
            probs = np.load(file)["probs"]
        else:
            probs, problems = predict_rows(predictor, rows)
            if problems:
                print(f"{item['folder']}: {len(problems)} unreadable picture(s), left out: {problems[:3]}")
            np.savez(file, probs=probs)
        out.append({**item, "probs": probs, "y": rows[list(LABELS)].to_numpy(float)})
    return out


def curve_table(predicted: list[dict], n_boot: int, seed: int) -> pd.DataFrame:
    """Macro-AUROC (soft vote) with a 95% bootstrap interval, and per-label AUROC, for every set."""
    rows = []
    for item in predicted:
        score = combine(list(item["probs"]), "soft")
        ok = ~np.isnan(score).any(1)
        ci = bootstrap_auroc(item["y"][ok], score[ok], n=n_boot, seed=seed)
        s = item["settings"]
        rows.append({"sweep": item["sweep"], "level": item["level"], "style": s.style, "images": int(ok.sum()),
                     "macro_auroc": ci["macro"][0], "low": ci["macro"][1], "high": ci["macro"][2],
                     **{k: ci[k][0] for k in LABELS}, **{f"{k}_low": ci[k][1] for k in LABELS},
                     **{f"{k}_high": ci[k][2] for k in LABELS},
                     "positives": {k: int(np.nansum(item["y"][ok][:, j])) for j, k in enumerate(LABELS)},
                     "folder": item["folder"]})
    return pd.DataFrame(rows)


def plot_curves(table: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One panel per artefact: macro-AUROC and its interval against strength; the default mix as a band."""
    plt = pyplot()
    names = [n for n in SWEEPS if n in set(table["sweep"])]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.6), squeeze=False)
    default = table[table["sweep"] == "default"].iloc[0]
    for ax, name in zip(axes[0], names):
        key, _, meaning = SWEEPS[name]
        part = table[table["sweep"] == name]
        if name in DEFAULT_LEVEL:  # the default set is this level of the sweep
            part = pd.concat([part, default.to_frame().T.assign(sweep=name, level=DEFAULT_LEVEL[name])])
        part = part.astype({"level": float, "macro_auroc": float, "low": float, "high": float,
                            **{k: float for k in LABELS}}).sort_values("level")
        ax.axhspan(default["low"], default["high"], color="0.85", label="default mix (95% CI)")
        for k in LABELS:  # each label's AUROC, thin: which finding suffers first
            ax.plot(part["level"], part[k], lw=0.8, alpha=0.6, label=k)
        ax.fill_between(part["level"], part["low"], part["high"], alpha=0.25, color="k")
        ax.plot(part["level"], part["macro_auroc"], "o-", color="k", label="macro-AUROC")
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        if key == "jpeg_quality":
            ax.invert_xaxis()
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("JPEG quality" if key == "jpeg_quality" else "strength (x default)", fontsize=8)
        ax.set_ylim(0.2, 1.0)
    axes[0][0].set_ylabel("test AUROC")
    axes[0][0].legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _detail(item: dict, index: int, zoom: bool) -> np.ndarray:
    """The picture, or (zoom) a full-resolution window on the middle of its sheet where blur and JPEG show."""
    import cv2

    image = sorted((Path(item["folder"]) / "test").glob("*.jpg"))[index]
    if not zoom:
        return thumbnail(str(image))
    ann = json.loads((Path(item["folder"]) / "annotations" / f"{image.stem}.json").read_text())
    corners = np.array(ann["paper_corners"], float)
    (cx, cy), (w, h) = corners.mean(0), corners.max(0) - corners.min(0)
    img = cv2.imread(str(image))
    x0, y0 = int(max(0, cx - 0.15 * w)), int(max(0, cy - 0.1 * h))
    return cv2.cvtColor(img[y0:int(cy + 0.1 * h), x0:int(cx + 0.15 * w)], cv2.COLOR_BGR2RGB)


def examples(sets: list[dict], path: Path, index: int = 0) -> Path:
    """The same ECG at every level of every sweep (blur and JPEG: a full-resolution detail of the sheet)."""
    plt = pyplot()
    sweeps = [s for s in SWEEPS if any(i["sweep"] == s for i in sets)]
    default = next(i for i in sets if i["sweep"] == "default")
    cols = max(len(SWEEPS[s][1]) for s in sweeps)
    fig, axes = plt.subplots(len(sweeps), cols, figsize=(3 * cols, 2.6 * len(sweeps)), squeeze=False)
    for r, name in enumerate(sweeps):
        key, levels, _ = SWEEPS[name]
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(levels):
                continue
            level = levels[c]
            # a level that draws the default set's pictures is the default set
            item = next((i for i in sets if i["sweep"] == name and i["level"] == level), default)
            zoom = name in ("blur", "jpeg")
            ax.imshow(_detail(item, index, zoom))
            ax.set_title(f"{name} {level:g}" + (" (detail)" if zoom else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def run_robustness(grid, out_dir: Path, n: int, workers: int, n_boot: int, seed: int) -> tuple[pd.DataFrame, Path]:
    """The baseline's packaged ensemble on every sweep (sets made or reused, predictions cached per model): the curve
    table and the example pictures (robustness_examples.png in out_dir)."""
    sets = make_sets(grid.base, grid.paths.data_root, n, workers)
    pictures = examples(sets, Path(out_dir) / "robustness_examples.png")
    model_file = grid.run_dir("baseline") / "05_ensemble" / "model.pt"
    predictor = Predictor(model_file, detector_for(grid.base, grid.run_dir("base") / "02_preprocess"),
                          grid.base["device"], grid.base["sam_checkpoint"])
    predicted = predict_sets(predictor, sets, grid.root / "robustness_predictions", model_file)
    curve = curve_table(predicted, n_boot, seed).assign(model_run=str(grid.run_dir("baseline")))
    return curve, pictures


def robustness_step(grid, out_dir: Path, chosen: list[str], n: int, workers: int, n_boot: int, seed: int
                    ) -> tuple[pd.DataFrame, list[Path]]:
    """Step 07's robustness comparison when chosen: the curve (robustness.csv) and its figures (the example pictures
    and robustness.png) in out_dir; an empty curve and no figures otherwise."""
    if "robustness" not in chosen:
        return pd.DataFrame(), []
    curve, pictures = run_robustness(grid, out_dir, n, workers, n_boot, seed)
    curve.to_csv(Path(out_dir) / "robustness.csv", index=False)
    plot = plot_curves(curve, Path(out_dir) / "robustness.png", f"baseline ensemble, {grid.scale} scale")
    return curve, [pictures, plot]


def style_table(curve: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The default set beside each photo style's (the style sweep), written to path; empty without the sweeps."""
    columns = ["style", "images", "macro_auroc", "low", "high", *LABELS, "folder"]
    style = curve[curve["sweep"].isin(["default", "style"])][columns] if len(curve) else pd.DataFrame()
    style.to_csv(path, index=False)
    return style


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m utils.ablations.robustness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True, help="ensemble package (repeatable)")
    ap.add_argument("--sweeps", default=",".join(SWEEPS), help="comma-separated, from " + ", ".join(SWEEPS))
    ap.add_argument("--profile", default="demo", help="whose picture settings and data folder the sets use")
    ap.add_argument("--images", type=int, default=150, help="test pictures per level")
    ap.add_argument("--detector", default="", help="YOLO weights; default: the classical sheet finder")
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "robustness")
    a = add_debug(ap).parse_args(argv)
    missing = [str(m) for m in a.model if not m.is_file()]
    if missing:
        return fail(f"--model: no such file {missing}")

    def body(a) -> int:
        cfg = resolve_config(a.profile)
        sets = make_sets(cfg, resolve_paths(cfg).data_root, a.images, cfg["num_workers"],
                         sweeps=tuple(split_list(a.sweeps)))
        out = new_folder(a.out / "run")
        examples(sets, out / "examples.png")
        tables = []
        for k, model in enumerate(a.model):
            predicted = predict_sets(Predictor(model, a.detector, cfg["device"]), sets, a.out / "predictions", model)
            table = curve_table(predicted, a.bootstrap, cfg["seed"]).assign(model=str(model))
            plot_curves(table, out / f"curves-{k + 1}.png", str(model))
            tables.append(table)
            print(f"{model}:\n" + table[["sweep", "level", "macro_auroc", "low", "high", *LABELS]].round(3)
                  .to_string(index=False))
        atomic_write_text(out / "curves.csv", pd.concat(tables).to_csv(index=False))
        print(f"written: {out}")
        return 0

    return run_cli(body, a)


if __name__ == "__main__":
    raise SystemExit(main())
