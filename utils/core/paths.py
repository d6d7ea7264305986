"""The path resolver: the only code that knows Kaggle's layout. Every root can be overridden."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from utils.core.keys import split_list

REPO_ROOT = Path(__file__).resolve().parents[2]
# Kaggle's folders; the variables stand in for them where a Kaggle session is rehearsed (utils.pipeline.rehearsal)
KAGGLE_INPUT = Path(os.environ.get("ECG_KAGGLE_INPUT", "/kaggle/input"))
KAGGLE_WORKING = Path(os.environ.get("ECG_KAGGLE_WORKING", "/kaggle/working"))
# the session's disk beyond /kaggle/working (about 73 GB in all, 20 GB of it saved): what can be drawn again from its
# settings goes here, so that the saved output holds only what a resume cannot make again
KAGGLE_SCRATCH = Path(os.environ.get("ECG_KAGGLE_SCRATCH", "/kaggle/temp"))
# Kaggle mounts a dataset at /kaggle/input/<slug> (older sessions) or /kaggle/input/datasets/<owner>/<slug>, a
# competition at /kaggle/input/<slug> or /kaggle/input/competitions/<slug>: markers are looked for this deep
INPUT_DEPTH = 4


def on_kaggle() -> bool:
    """True inside a Kaggle notebook session (the variable Kaggle sets, or its folder layout)."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ or KAGGLE_INPUT.is_dir()


@dataclass(frozen=True)
class Paths:
    input_root: Path | None  # attached datasets (read-only); None when there are none
    working_root: Path
    output_root: Path
    data_root: Path  # generated datasets, drawn again from their settings when gone: never part of a resume

    @property
    def data_saved(self) -> bool:
        """Whether the generated datasets sit inside the output a Kaggle session saves."""
        return self.data_root.is_relative_to(self.output_root) or self.data_root.is_relative_to(self.working_root)

    def input(self, *parts: str) -> Path:
        if self.input_root is None:
            raise FileNotFoundError("no input_root: set input_root to the folder of attached datasets")
        return self.input_root.joinpath(*parts)


def _given(value: str) -> bool:
    return bool(value) and value != "auto"


def resolve_paths(cfg: Mapping[str, str]) -> Paths:
    """Turn the config's `auto` roots into real folders for this machine."""
    kaggle = on_kaggle()
    if _given(cfg["input_root"]):
        input_root = Path(cfg["input_root"]).expanduser()
    else:
        input_root = KAGGLE_INPUT if kaggle else None
    if _given(cfg["working_root"]):
        working = Path(cfg["working_root"]).expanduser()
    else:
        working = KAGGLE_WORKING if kaggle else REPO_ROOT
    output = Path(cfg["output_root"]).expanduser() if _given(cfg["output_root"]) else working / "outputs"
    if _given(cfg["data_root"]):
        data = Path(cfg["data_root"]).expanduser()
    else:
        data = KAGGLE_SCRATCH / "data" if kaggle else output / "data"
    return Paths(input_root, working.resolve(), output.resolve(), data.resolve())


def find_inputs(paths: Paths, marker: str, max_depth: int = INPUT_DEPTH) -> list[Path]:
    """Folders under input_root (attached Kaggle datasets) that contain `marker`, nearest first."""
    if paths.input_root is None or not paths.input_root.is_dir():
        return []
    found = []
    for depth in range(max_depth + 1):
        pattern = "/".join(["*"] * depth + [marker]) if depth else marker
        found += sorted(p.parent for p in paths.input_root.glob(pattern))
    return list(dict.fromkeys(found))


def resolve_input_path(paths: Paths, value: str, marker: str, what: str, key: str) -> Path:
    """A source folder: the configured path if given, else the one attached dataset holding `marker`."""
    if value:
        path = Path(value).expanduser()
        if not path.is_absolute() and paths.input_root is not None and (paths.input_root / path).exists():
            path = paths.input_root / path
        if not path.exists():
            raise FileNotFoundError(f"{what}: {path} does not exist (set by '{key}')")
        return path
    hits = find_inputs(paths, marker)
    if not hits:
        where = paths.input_root or "no input_root"
        raise FileNotFoundError(f"{what}: no folder with {marker} under {where}; attach it or set '{key}'")
    return hits[0]


def present_folders(spec: str, base: Path = REPO_ROOT) -> tuple[list[Path], list[str]]:
    """The folders of a comma-separated list that exist (relative ones from the repository), and notes on the rest."""
    found, notes = [], []
    for item in split_list(spec):
        path = Path(item) if Path(item).is_absolute() else (base / item).resolve()
        (found.append(path) if path.is_dir() else notes.append(f"{item}: not found, skipped"))
    return found, notes


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth", "*.pt")


def dataset_slug(name: str) -> str:
    """The Kaggle dataset name of a model's weights: `convnext_base.fb_in22k` -> `convnext-base-fb-in22k`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def find_attached_weights(paths: Paths, name: str, pattern: str = "") -> Path | None:
    """The weights of model `name` in an attached dataset named after it (`dataset_slug`), at any mount depth: the
    folder for a folder-loading model (pattern empty), else the first file matching `pattern` in it."""
    if paths.input_root is None or not paths.input_root.is_dir():
        return None
    slug = dataset_slug(name)
    for depth in range(1, INPUT_DEPTH + 1):
        for folder in sorted(paths.input_root.glob("/".join(["*"] * depth))):
            if folder.name != slug or not folder.is_dir():
                continue
            files = sorted(f for pat in ([pattern] if pattern else WEIGHT_FILES) for f in folder.rglob(pat))
            if files:
                return files[0] if pattern else folder
    return None
