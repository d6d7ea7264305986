"""Shared code of the notebook suite: notebooks orchestrate, `utils` computes."""
from .config import CONFIG_KEYS, Config, ConfigError, resolve_config
from .paths import Paths, on_kaggle, resolve_paths
from . import io, kaggle
from .runs import RunError, Step, finish_step, start_step

__all__ = ["CONFIG_KEYS", "Config", "ConfigError", "Paths", "RunError", "Step", "finish_step", "io", "kaggle",
           "on_kaggle", "resolve_config", "resolve_paths", "start_step"]
