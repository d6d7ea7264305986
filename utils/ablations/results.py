"""Reading the grid's runs: each row's test, real-ECG and out-of-fold macro-AUROC with intervals, paired differences
to the baseline (the one bootstrap, utils.core.metrics), verdicts against the paper, the voting table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from utils.ablations.grid import BASELINE, PAPER, TABLES, Grid
from utils.core.atomic import read_json
from utils.core.labels import LABELS
from utils.core.metrics import bootstrap_auroc, format_interval
from utils.ensemble.vote import VOTES, Calibration, vote_scores


def test_truth(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n, 5, NaN where unknown) of the run's test rows in the order step 05 predicted them, and the known-mask."""
    manifest = pd.read_csv(Path(run_dir) / "01_assemble" / "manifest.csv", dtype={"id": str})
    test = manifest[(manifest["stage"] == "II") & (manifest["split"] == "test")]
    y = test[list(LABELS)].to_numpy(float)
    return y, ~np.isnan(y)


def run_scores(run_dir: Path, rule: str = "soft") -> np.ndarray:
    """The run's test scores under a voting rule, from step 05's per-fold probabilities and calibration."""
    s05 = Path(run_dir) / "05_ensemble"
    if not (s05 / "test_fold_probs.npy").is_file():
        raise FileNotFoundError(f"{s05 / 'test_fold_probs.npy'} is missing: step 05 of {run_dir} did not finish, or "
                                f"was made by an older version; re-run it (--steps 05 --force)")
    table = pd.read_csv(s05 / "calibration.csv")
    calibration = Calibration(tuple(table["temperature"].astype(float)),
                              tuple(table["threshold"].astype(float)) if "threshold" in table else (0.5,) * len(LABELS))
    return vote_scores(np.load(s05 / "test_fold_probs.npy"), rule, calibration)


def real_predictions(run_dir: Path) -> pd.DataFrame | None:
    """The run's real-ECG check (step 05, real_check_dirs): scored records sorted by id; None when it has none."""
    path = Path(run_dir) / "05_ensemble" / "real_check" / "real_predictions.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, dtype={"id": str})
    return df[df["error"].fillna("").astype(str) == ""].sort_values("id").reset_index(drop=True)


def _real_arrays(df: pd.DataFrame, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    return df[list(LABELS)].to_numpy(float), df[[f"p_{k}{suffix}" for k in LABELS]].to_numpy(float)


def row_metrics(run_dir: Path, n_boot: int, seed: int) -> dict:
    """Test and out-of-fold macro-AUROC with 95% bootstrap intervals, weights source and time of one run."""
    run_dir = Path(run_dir)
    out = {}
    y, known = test_truth(run_dir)
    if known.all() and len(y):
        ci = bootstrap_auroc(y, run_scores(run_dir), n=n_boot, seed=seed)["macro"]
        out.update(test_auroc=ci[0], test_low=ci[1], test_high=ci[2])
    real = real_predictions(run_dir)
    if real is not None and len(real):
        ci = bootstrap_auroc(*_real_arrays(real), n=n_boot, seed=seed)["macro"]
        out.update(real_auroc=ci[0], real_low=ci[1], real_high=ci[2], real_records=len(real))
    oof = pd.read_csv(run_dir / "04_stage2" / "oof.csv", dtype={"id": str})
    ci = bootstrap_auroc(oof[[f"y_{k}" for k in LABELS]].to_numpy(float), oof[list(LABELS)].to_numpy(float),
                         n=n_boot, seed=seed)["macro"]
    out.update(oof_auroc=ci[0], oof_low=ci[1], oof_high=ci[2])
    first = sorted((run_dir / "04_stage2" / "folds").glob("fold*/result.json"))
    source = read_json(first[0])["weights_source"] if first else ""
    s1 = run_dir / "03_stage1" / "model" / "result.json"
    if s1.is_file() and source.startswith("checkpoint:"):
        source = "Stage I from " + read_json(s1)["weights_source"].split(":")[0]
    out["weights"] = source.replace(str(run_dir) + "/", "")
    out["minutes"] = round(sum(read_json(p).get("seconds", 0) for p in run_dir.glob("0[3-5]_*/step.json")
                               if not p.parent.is_symlink()) / 60, 1)
    return out


def paired_interval(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Macro-AUROC of scores a minus scores b on the same pictures, with a paired 95% bootstrap interval."""
    return bootstrap_auroc(y, a, n=n_boot, seed=seed, baseline=b)["macro"]


def paired_delta(run_dir: Path, base_dir: Path, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Test macro-AUROC of a row minus the baseline's, on the same pictures, with a paired 95% interval."""
    y, _ = test_truth(base_dir)
    return paired_interval(y, run_scores(run_dir), run_scores(base_dir), n_boot, seed)


def paired_delta_real(run_dir: Path, base_dir: Path, n_boot: int, seed: int) -> tuple[float, float, float] | None:
    """The same on the real-ECG test set (records both runs scored); None when either run has no real check."""
    a, b = real_predictions(run_dir), real_predictions(base_dir)
    if a is None or b is None:
        return None
    both = a.merge(b[["id", *[f"p_{k}" for k in LABELS]]], on="id", suffixes=("", "_b"))
    if both.empty:
        return None
    y, pa = _real_arrays(both)
    return paired_interval(y, pa, _real_arrays(both, "_b")[1], n_boot, seed)


def verdict(paper_delta: float | None, lo: float, hi: float) -> str:
    """Does our difference to the baseline go the paper's way? Only when the interval excludes zero."""
    if paper_delta is None or np.isnan(lo):
        return "no paper figure"
    if lo <= 0 <= hi:
        return "inconclusive (interval covers 0)"
    ours = 1 if lo > 0 else -1
    return "agrees" if ours == np.sign(paper_delta) else "disagrees"


def results_table(grid: Grid, status: pd.DataFrame, table: str, n_boot: int, seed: int) -> pd.DataFrame:
    """One table beside the paper: ours (test and OOF, 95% CI), the paper's, and the difference to the baseline."""
    base_dir = grid.run_dir("baseline")
    base_ok = bool((status.loc[status["row"] == "baseline", "status"] == "complete").any())
    rows = []
    for name, (pub, hidden) in PAPER[table].items():
        is_base = name == BASELINE[table] or (table == "strategy" and name == "Stage I real + synthetic")
        match = status[(status["row"] == ("baseline" if is_base else name))]
        rec = match.iloc[0].to_dict() if len(match) else {"status": "not in this grid", "run_dir": ""}
        if is_base and table == "strategy" and rec.get("status") == "complete" and not grid.has_real_stage1():
            rec = {**rec, "status": f"complete (no real Stage I images: {', '.join(sorted(grid.stage1_kinds))})"}
        row = {"row": name, "paper_public": pub, "paper_hidden": hidden}
        if str(rec.get("status", "")).startswith("complete"):
            m = row_metrics(Path(rec["run_dir"]), n_boot, seed)
            row.update(test=format_interval(m.get("test_auroc"), m.get("test_low"), m.get("test_high")),
                       real=format_interval(m.get("real_auroc"), m.get("real_low"), m.get("real_high")),
                       oof=format_interval(m["oof_auroc"], m["oof_low"], m["oof_high"]), **m)
            if not is_base and base_ok and Path(rec["run_dir"]) != base_dir:
                d = paired_delta(Path(rec["run_dir"]), base_dir, n_boot, seed)
                base_hidden = PAPER[table][BASELINE[table]][1]
                pdelta = None if hidden is None else hidden - base_hidden
                row.update(paper_delta=pdelta, delta=format_interval(*d), verdict=verdict(pdelta, d[1], d[2]))
                r = paired_delta_real(Path(rec["run_dir"]), base_dir, n_boot, seed)
                if r is not None:
                    row.update(real_delta=format_interval(*r), real_verdict=verdict(pdelta, r[1], r[2]))
            elif is_base:
                row.update(verdict="baseline", real_verdict="baseline")
        row.update(status=rec.get("status", ""), run_dir=rec.get("run_dir", ""))
        rows.append(row)
    return pd.DataFrame(rows)


def head_to_head(status: pd.DataFrame, first: str, second: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Row `first` minus row `second` (macro-AUROC, paired 95% interval) on the synthetic and the real test set."""
    dirs = {}
    for name in (first, second):
        match = status[(status["row"] == name) & status["status"].astype(str).str.startswith("complete")]
        if match.empty:
            return pd.DataFrame([{"comparison": f"{first} - {second}", "test_set": "-",
                                  "status": f"{name}: not complete in this grid"}])
        dirs[name] = Path(match.iloc[0]["run_dir"])
    a, b = dirs[first], dirs[second]
    rows = []
    for test_set, d in (("synthetic photos", paired_delta(a, b, n_boot, seed)),
                        ("real ECGs (PTB-XL, photo style)", paired_delta_real(a, b, n_boot, seed))):
        if d is None:
            rows.append({"comparison": f"{first} - {second}", "test_set": test_set, "status": "no real-ECG check"})
            continue
        better = "inconclusive (interval covers 0)" if d[1] <= 0 <= d[2] else (first if d[1] > 0 else second)
        rows.append({"comparison": f"{first} - {second}", "test_set": test_set, "delta": format_interval(*d),
                     "delta_auroc": d[0], "low": d[1], "high": d[2], "better": better, "status": "complete"})
    return pd.DataFrame(rows)


def voting_table(base_dir: Path, n_boot: int, seed: int) -> pd.DataFrame:
    """Soft, hard (the paper's) and rank voting of the baseline's fold models on the same test pictures."""
    y, _ = test_truth(base_dir)
    rows = []
    for rule in VOTES:
        scores = run_scores(base_dir, rule)
        ci = bootstrap_auroc(y, scores, n=n_boot, seed=seed)["macro"]
        rows.append({"rule": rule, "test": format_interval(*ci), "test_auroc": ci[0], "test_low": ci[1], "test_high": ci[2],
                     "distinct_scores_per_label": int(np.mean([len(np.unique(scores[:, j]))
                                                              for j in range(len(LABELS))])),
                     "run_dir": str(base_dir)})
    return pd.DataFrame(rows)




def write_tables(grid: Grid, status: pd.DataFrame, chosen: list[str], n_boot: int, seed: int, folder: Path
                 ) -> dict[str, pd.DataFrame]:
    """Every chosen comparison's table, written as table_<name>.csv in folder."""
    tables = {name: results_table(grid, status, name, n_boot, seed) for name in TABLES if name in chosen}
    for name, table in tables.items():
        table.to_csv(Path(folder) / f"table_{name}.csv", index=False)
    return tables


def recorded_vs_simulated(status: pd.DataFrame, chosen: list[str], n_boot: int, seed: int, path: Path
                          ) -> pd.DataFrame:
    """Stage I on recorded against simulated waveforms, on the same pictures (the strategy table's runs), written to
    path; empty when the strategy table is not among the chosen comparisons."""
    versus = head_to_head(status, "Stage I recorded waveforms", "Stage I simulated waveforms", n_boot, seed) \
        if "strategy" in chosen else pd.DataFrame()
    versus.to_csv(path, index=False)
    return versus
