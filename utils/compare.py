"""Stage I + Stage II against Stage II alone on a finished run: the same data, folds and test pictures.

    python -m utils.compare --run outputs/demo/latest

Makes a sibling run `<run>-stage2-alone` that links the run's steps 00-03 and runs 04-05 with Stage II starting
from the backbone's pretrained weights instead of Stage I's (stage2_init=imagenet); a finished sibling is reused.
Prints both runs' test and out-of-fold macro-AUROC with 95% bootstrap intervals and the paired difference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .ablations import link_steps, paired_delta, row_metrics
from .config import CONFIG_KEYS
from .paths import resolve_paths
from .runs import find_step_dir, is_step_complete, load_config, profile_root


def stage2_alone(run_dir: Path, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per run (two-stage, Stage II alone) and the paired difference of their test macro-AUROC."""
    from .pipeline import run_pipeline

    run_dir = Path(run_dir).resolve()
    last = find_step_dir(run_dir, "05")
    if last is None or not is_step_complete(last):
        raise FileNotFoundError(f"{run_dir} has no complete step 05: run the whole chain first")
    cfg = load_config(run_dir / "config.yaml")
    if cfg.get("stage2_init") != "stage1":
        raise ValueError(f"{run_dir} did not start Stage II from Stage I (stage2_init={cfg.get('stage2_init')!r})")
    sibling = run_dir.parent / f"{run_dir.name}-stage2-alone"
    link_steps(run_dir, sibling, ("00", "01", "02", "03"))
    overrides = {k: v for k, v in cfg.items() if k in CONFIG_KEYS and k not in ("profile", "run_dir")}
    root = profile_root(resolve_paths(cfg), cfg["profile"]).resolve()
    run_pipeline(cfg["profile"], "04-05", {**overrides, "stage2_init": "imagenet"},
                 run_name=str(sibling.relative_to(root)), set_latest=False)
    rows = [{"run": "Stage I + Stage II", "run_dir": str(run_dir), **row_metrics(run_dir, n_boot, seed)},
            {"run": "Stage II alone", "run_dir": str(sibling), **row_metrics(sibling, n_boot, seed)}]
    delta = paired_delta(run_dir, sibling, n_boot, seed)
    rows[0].update(delta=delta[0], delta_low=delta[1], delta_high=delta[2])
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a finished run (steps 00-05)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = ap.parse_args(argv)
    try:
        table = stage2_alone(a.run, a.bootstrap)
    except Exception as err:  # noqa: BLE001 - a user error is one line; --debug shows where it came from
        if a.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    pd.set_option("display.width", 200)
    print(table.drop(columns=["run_dir"]).round(4).to_string(index=False))
    d = table.iloc[0]
    print(f"two-stage minus Stage II alone, test macro-AUROC: {d['delta']:+.3f} "
          f"[{d['delta_low']:+.3f}, {d['delta_high']:+.3f}] (paired bootstrap, same pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
