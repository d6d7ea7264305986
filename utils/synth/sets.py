"""Step 00: the synthetic sets a run needs, cached under data_root by their settings, plus their summary."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from utils.core.figures import pyplot, thumbnail
from utils.core.keys import settings_key
from utils.core.labels import LABELS
from utils.core.paths import resolve_input_path
from utils.synth.code15_source import list_exams
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings
from utils.synth.wfdb_source import list_records


def synthesize_sets(cfg, paths, progress: bool = True) -> dict[str, dict]:
    """Make (or reuse) the Stage I scan-like set and the photo-like target set; returns name -> summary."""
    out: dict[str, dict] = {}
    refs, problems, record = None, [], {}
    if cfg["synth_from_wfdb"] and cfg["synth_from_code15"]:
        raise ValueError("synth_from_wfdb and synth_from_code15 are both set: choose one source of recorded waveforms")
    if cfg["synth_from_wfdb"]:
        labels_csv = Path(cfg["synth_labels_csv"]) if cfg["synth_labels_csv"] else None
        refs, problems = list_records(Path(cfg["synth_from_wfdb"]), labels_csv)
    if cfg["synth_from_code15"]:
        folder = resolve_input_path(paths, "" if cfg["synth_from_code15"] == "auto" else cfg["synth_from_code15"],
                                    "exams.csv", "CODE-15%", "synth_from_code15")
        refs, problems = list_exams(folder)
        record = {"code15": str(folder)}
    if cfg["synth_scan_train"] > 0 or refs is not None:
        settings = SynthSettings.from_config(cfg, "scan")
        n = cfg["synth_scan_train"]
        chosen = refs[:n] if (refs is not None and n > 0) else refs
        key = settings_key({"s": settings.to_dict(), "n": n, "wfdb": cfg["synth_from_wfdb"],
                            "labels": cfg["synth_labels_csv"], **record})
        folder = paths.data_root / f"synth-scan-{key}"
        out["scan"] = generate_dataset(folder, settings, n_train=n, refs=chosen, workers=cfg["num_workers"],
                                       progress=progress)
        out["scan"]["record_problems"] = [f"{rid}: {why}" for rid, why in problems]
    if cfg["synth_photo_train"] > 0 or cfg["synth_photo_test"] > 0:
        settings = SynthSettings.from_config(cfg, "photo")
        key = settings_key({"s": settings.to_dict(), "n": cfg["synth_photo_train"], "t": cfg["synth_photo_test"]})
        folder = paths.data_root / f"synth-photo-{key}"
        out["photo"] = generate_dataset(folder, settings, n_train=cfg["synth_photo_train"],
                                        n_test=cfg["synth_photo_test"], workers=cfg["num_workers"],
                                        progress=progress)
    return out


def summary_table(sets: dict[str, dict]) -> pd.DataFrame:
    """Counts and label prevalence per set and split (unknown labels excluded from the prevalence)."""
    rows = []
    for name, info in sets.items():
        folder = Path(info["folder"])
        for split, csv_name in (("train", "train.csv"), ("test", "test_labels.csv")):
            if not (folder / csv_name).is_file():
                continue
            df = pd.read_csv(folder / csv_name, dtype={"id": str})
            if df.empty:
                continue
            row = {"set": name, "split": split, "images": len(df), "failed": info.get("failed", 0)}
            for k in LABELS:
                known = df[k].dropna()
                row[k] = round(float(known.mean()), 3) if len(known) else float("nan")
            row["normal"] = round(float((df[list(LABELS)].fillna(0).sum(1) == 0).mean()), 3)
            rows.append(row)
    return pd.DataFrame(rows)


def sample_grid(sets: dict[str, dict], path: Path, per_label: int = 1) -> Path:
    """One example per style and label (and a normal), with its findings, saved as a figure."""
    plt = pyplot()
    columns = ["normal", *LABELS]
    names = list(sets)
    fig, axes = plt.subplots(len(names), len(columns), figsize=(3.2 * len(columns), 3.4 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        folder = Path(sets[name]["folder"])
        df = pd.read_csv(folder / "train.csv", dtype={"id": str})
        for c, col in enumerate(columns):
            ax = axes[r][c]
            ax.axis("off")
            hits = df[(df[list(LABELS)].fillna(0).sum(1) == 0)] if col == "normal" else df[df[col] == 1]
            if hits.empty:
                ax.set_title(f"{name}: no {col}", fontsize=9)
                continue
            sid = hits.iloc[0]["id"]
            ann = json.loads((folder / "annotations" / f"{sid}.json").read_text())
            ax.imshow(thumbnail(folder / ann["image"]))
            ax.set_title(f"{name} {col}\n{', '.join(ann.get('findings', [])[:2])}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
