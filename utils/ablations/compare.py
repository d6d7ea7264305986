"""A finished run against a change of its steps 04-05, on the same data, folds, Stage I model and test pictures.

    python -m utils.ablations.compare --run outputs/demo/latest                       # Stage I + II against Stage II alone
    python -m utils.ablations.compare --run outputs/demo/latest --set stage2_lr=0.0002   # any Stage II / ensemble setting

Makes a sibling run `<run>-<change>` that links the run's steps 00-03 and runs 04-05 with the change (by default
stage2_init=imagenet: Stage II starts from the backbone's pretrained weights instead of Stage I's); a finished
sibling is reused. Prints both runs' test and out-of-fold macro-AUROC with 95% bootstrap intervals and the paired
difference of their test macro-AUROC.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from utils.ablations.grid import link_steps
from utils.ablations.results import paired_delta, row_metrics
from utils.core.cli import add_debug, run_cli
from utils.core.config import CONFIG_KEYS, parse_overrides
from utils.core.paths import resolve_paths
from utils.core.runs import find_step_dir, is_step_complete, load_config, profile_root
from utils.pipeline.runner import run_pipeline

STAGE2_ALONE = {"stage2_init": "imagenet"}


def stage2_alone(run_dir: Path, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Stage I + Stage II against Stage II alone (the paper's Table 4), paired on the same pictures."""
    return compare_stage2(run_dir, STAGE2_ALONE, n_boot, seed)


def compare_stage2(run_dir: Path, change: dict, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per run (as it is, with the change to steps 04-05) and the paired difference of their test AUROC."""
    run_dir = Path(run_dir).resolve()
    last = find_step_dir(run_dir, "05")
    if last is None or not is_step_complete(last):
        raise FileNotFoundError(f"{run_dir} has no complete step 05: run the whole chain first")
    cfg = load_config(run_dir / "config.yaml")
    same = {k: v for k, v in change.items() if cfg.get(k) == v}
    if same:
        raise ValueError(f"{run_dir} already has {same}: nothing to compare")
    name = "stage2-alone" if change == STAGE2_ALONE else "-".join(f"{k}-{v}" for k, v in sorted(change.items()))
    sibling = run_dir.parent / f"{run_dir.name}-{name}"
    link_steps(run_dir, sibling, ("00", "01", "02", "03"))
    overrides = {k: v for k, v in cfg.items() if k in CONFIG_KEYS and k not in ("profile", "run_dir")}
    root = profile_root(resolve_paths(cfg), cfg["profile"]).resolve()
    run_pipeline(cfg["profile"], "04-05", {**overrides, **change}, run_name=str(sibling.relative_to(root)),
                 set_latest=False)
    labels = ("Stage I + Stage II", "Stage II alone") if change == STAGE2_ALONE else \
        ("as it is", "with " + ", ".join(f"{k}={v}" for k, v in change.items()))
    rows = [{"run": labels[0], "run_dir": str(run_dir), **row_metrics(run_dir, n_boot, seed)},
            {"run": labels[1], "run_dir": str(sibling), **row_metrics(sibling, n_boot, seed)}]
    delta = paired_delta(run_dir, sibling, n_boot, seed)
    rows[0].update(delta=delta[0], delta_low=delta[1], delta_high=delta[2])
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.ablations.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished run (steps 00-05)")
    ap.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of steps 04-05 to change (repeatable; default: stage2_init=imagenet)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    a = add_debug(ap).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return run_cli(_report, a)


def _report(a) -> int:
    change = parse_overrides(a.changes) if a.changes else STAGE2_ALONE
    table = compare_stage2(a.run, change, a.bootstrap)
    pd.set_option("display.width", 200)
    print(table.drop(columns=["run_dir"]).round(4).to_string(index=False))
    d = table.iloc[0]
    print(f"{table['run'][0]} minus {table['run'][1]}, test macro-AUROC: {d['delta']:+.3f} "
          f"[{d['delta_low']:+.3f}, {d['delta_high']:+.3f}] (paired bootstrap, same pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
