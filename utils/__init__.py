"""Shared code of the notebook suite: notebooks orchestrate, `utils` computes.

The folders are the notebooks' steps: synth (00), data (01), preprocess (02), train (03-04), ensemble (05, with
predict), gradcam (06, with the report), ablations (07); pipeline holds the runner, the budget and Kaggle packaging, bench the
benchmarks, core the primitives every step may use (the configuration and run folders, labels, metrics, image
reading, figures, atomic writes, the resumable pool, the settings key, the command-line wrapper).
"""
from .core.pool import keep_freed_memory

keep_freed_memory()  # every process of the suite (kernels, workers, commands) keeps freed memory for its next picture
from .core.labels import LABELS  # noqa: E402
from .core.paths import Paths, on_kaggle, resolve_paths  # noqa: E402
from .core.config import CONFIG_KEYS, Config, ConfigError, resolve_config  # noqa: E402
from .core.runs import RunError, Step, finish_step, start_step  # noqa: E402


def ensure_packages(*args, **kwargs) -> str:
    """On Kaggle: install what its image lacks from the attached wheels (utils.pipeline.kaggle.ensure_packages).
    Imported when called, so that `python -m utils.pipeline.kaggle` runs its module once."""
    from .pipeline.kaggle import ensure_packages as ensure

    return ensure(*args, **kwargs)


__all__ = ["CONFIG_KEYS", "Config", "ConfigError", "LABELS", "Paths", "RunError", "Step", "ensure_packages", "finish_step",
           "on_kaggle", "resolve_config", "resolve_paths", "start_step"]
