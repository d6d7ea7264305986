"""Step 07's figures and summary: each table as bars beside the paper, and every table as Markdown (tables.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from utils.ablations.grid import PAPER_SOURCE
from utils.core.atomic import atomic_write_text
from utils.core.figures import pyplot

# The columns each table shows, in the notebook and in tables.md.
TABLE_COLUMNS = ["row", "paper_public", "paper_hidden", "test", "real", "oof", "paper_delta", "delta", "verdict",
                 "real_delta", "real_verdict", "weights", "minutes", "status"]


def shown(tables: dict[str, pd.DataFrame]) -> pd.DataFrame | str:
    """Every table in one frame for the notebook: the table's name, then the columns TABLE_COLUMNS shows."""
    if not tables:
        return "no comparison tables among the chosen ones"
    return pd.concat([t[[c for c in TABLE_COLUMNS if c in t.columns]].assign(table=name)
                      for name, t in tables.items()]).set_index(["table", "row"])


def plot_tables(tables: dict[str, pd.DataFrame], path: Path, scale: str) -> Path:
    """Each table as bars (ours on the synthetic and on the real test set, 95% CI) beside the paper's hidden test."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.0), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        x = np.arange(len(t))
        bars = [("test", f"ours, synthetic photos ({scale})"), ("real", f"ours, real ECGs ({scale})")]
        for i, (col, label) in enumerate(bars):
            ours = pd.to_numeric(t.get(f"{col}_auroc", pd.Series(np.nan, index=t.index)), errors="coerce")
            lo = ours - pd.to_numeric(t.get(f"{col}_low", ours), errors="coerce")
            hi = pd.to_numeric(t.get(f"{col}_high", ours), errors="coerce") - ours
            ax.bar(x - 0.27 + 0.27 * i, ours.fillna(0), 0.27, yerr=[lo.fillna(0), hi.fillna(0)], capsize=2,
                   label=label)
        ax.bar(x + 0.27, pd.to_numeric(t["paper_hidden"], errors="coerce").fillna(0), 0.27, label="paper (hidden test)")
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_xticks(x, [r.replace("Stage I ", "I ").replace(" + ", "+").replace(" waveforms", "") for r in t["row"]],
                      fontsize=8, rotation=20)
        ax.set_ylim(0.3, 1.0)
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("macro-AUROC")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(table: pd.DataFrame, columns: list[str]) -> str:
    """The chosen columns of a table as Markdown (for tables.md and for pasting into reports)."""
    shown = table[[c for c in columns if c in table.columns]].map(
        lambda v: "-" if isinstance(v, float) and np.isnan(v) else str(v).replace("|", "/") if isinstance(v, str) else v)
    return shown.to_markdown(index=False, floatfmt=".4g")


def write_summary(path: Path, grid_root: Path, scale: str, tables: dict[str, pd.DataFrame], versus: pd.DataFrame,
                  votes: pd.DataFrame, curve: pd.DataFrame) -> Path:
    """tables.md: every table of the grid as Markdown, with each row's run directory."""
    parts = [f"# Ablations, scale {scale}\n\nGrid: `{grid_root}`. Paper figures: {PAPER_SOURCE}.\n"]
    for name, table in tables.items():
        parts += [f"## {name}\n", markdown(table, TABLE_COLUMNS + ["run_dir"]), ""]
    if len(versus) and "delta" in versus:
        parts += ["## recorded against simulated waveforms (Stage I)\n",
                  markdown(versus, ["comparison", "test_set", "delta", "better"]), ""]
    parts += ["## voting\n", markdown(votes, ["rule", "test", "distinct_scores_per_label"]), ""]
    if len(curve):
        parts += ["## robustness\n", markdown(curve.round(4), ["sweep", "level", "style", "images", "macro_auroc", "low",
                                                               "high"]), ""]
    atomic_write_text(Path(path), "\n".join(parts))
    return Path(path)
