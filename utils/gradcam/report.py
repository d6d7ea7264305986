"""One self-contained HTML report per run, built from the step folders' saved tables and figures."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd
import yaml

from utils.core.atomic import atomic_write_text
from utils.core.runs import find_step_dir

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
h1{border-bottom:2px solid #c33}h2{margin-top:1.6em;color:#933}table{border-collapse:collapse;font-size:13px;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f4f0f0}img{max-width:100%;border:1px solid #ddd}
.note{color:#666;font-size:13px}details{margin:.5em 0}"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def _table(path: Path, index: bool = False) -> str:
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return '<p class="note">no rows (for example: the test labels are hidden)</p>'
    return df.to_html(index=index, float_format=lambda v: f"{v:.4g}", border=0)


def build_report(run_dir: Path, out: Path) -> Path:
    """Sections for whatever steps the run holds: a step not run is said to be missing, never invented."""
    run_dir = Path(run_dir)
    parts = [f"<h1>ECG photo reader: run {html.escape(run_dir.name)}</h1>",
             f'<p class="note">{html.escape(str(run_dir))}</p>']

    def section(title, step_id, items):
        step = find_step_dir(run_dir, step_id)
        parts.append(f"<h2>{title}</h2>")
        if step is None:
            parts.append('<p class="note">step not run</p>')
            return
        for kind, name, caption in items:
            path = step / name
            if not path.is_file():
                continue
            if caption:
                parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(_img(path) if kind == "img" else _table(path))

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in cfg.items())
    parts.append(f"<h2>Configuration</h2><details><summary>{len(cfg)} settings</summary><table>{rows}</table></details>")
    section("Synthetic data", "00", [("table", "summary.csv", "images and prevalence"), ("img", "samples.png", "")])
    section("Data", "01", [("table", "summary.csv", "per source and split"), ("img", "prevalence.png", ""),
                           ("table", "fold_prevalence.csv", "folds"), ("img", "samples.png", "")])
    section("Preprocessing", "02", [("img", "before_after_roi_clahe.png", "before and after"),
                                    ("img", "worst_iou.png", "worst detections")])
    section("Stage I training", "03", [("img", "curves.png", "")])
    section("Stage II training", "04", [("img", "curves.png", "")])
    step4 = find_step_dir(run_dir, "04")
    if step4 is not None and (step4 / "oof_auroc.json").is_file():
        scores = json.loads((step4 / "oof_auroc.json").read_text())
        parts.append("<h3>out-of-fold AUROC</h3>" + pd.Series(scores).to_frame("AUROC").to_html(border=0))
    section("Evaluation", "05", [("table", "test_auroc_ci.csv", "test AUROC with bootstrap 95% intervals"),
                                 ("table", "test_auroc_by_rule.csv", "voting rules"),
                                 ("table", "test_auroc_by_severity.csv", "by artefact severity"),
                                 ("table", "real_auroc.csv", "real ECGs: PTB-XL records (cardiologists' labels) "
                                                             "rendered as photos, with bootstrap 95% intervals"),
                                 ("img", "roc_test.png", "ROC curves"), ("table", "calibration.csv", "calibration"),
                                 ("img", "reliability.png", "")])
    step6 = find_step_dir(run_dir, "06")
    galleries = sorted(step6.glob("gallery_*.png")) if step6 else []
    section("Where the model looks", "06", [("table", "attention.csv", "share of CAM energy (sheet, rhythm strip, leads)"),
                                            ("table", "faithfulness.csv", "which CAM to trust: mean ROAD score per "
                                             "method and label (higher: more faithful; the random map is the floor)"),
                                            ("img", "explorer.png", "the explorer's view of one test photo")])
    for g in galleries:
        parts.append(f"<h3>{html.escape(g.stem.replace('gallery_', ''))}: true positives, false positives, "
                     f"false negatives</h3>{_img(g)}")
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>run {html.escape(run_dir.name)}</title>" \
          f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    atomic_write_text(Path(out), doc)
    return Path(out)
