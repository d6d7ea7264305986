"""The notebooks' parameters cells and their prelude, written from the configuration.

`python -m utils.pipeline.cells` rewrites, in every notebook, the parameters cell (the keys the notebook declares, each
with its type, its default and its help from utils/core/config.py) and the prelude that opens the next code cell (find
the package on Kaggle or in a checkout, install what Kaggle's image lacks). `--check` changes nothing and names every
cell that differs. The notebook keeps the list of keys it exposes; everything else about a key lives in one place.
The cells stay in the notebooks because papermill injects values after the parameters cell and Kaggle's "Run All"
reads them as they are.
"""
from __future__ import annotations

import argparse
import ast
import json
import warnings
from pathlib import Path

import nbformat

from utils.core.atomic import atomic_write_text
from utils.core.cli import add_debug, run_cli
from utils.core.config import OPTION_BY_NAME, ConfigError
from utils.core.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
HEADER = "# written from utils/core/config.py by `python -m utils.pipeline.cells`: change a default there, not here"
# Where the code is, said once: the runner notebook and every step notebook open with it. The attached code dataset
# wherever Kaggle mounts it (/kaggle/input/<slug>, or /kaggle/input/datasets/<owner>/<slug>: up to four levels), else
# the checkout the notebook runs in (its folder or one above).
CODE_FINDER = """import os, sys, pathlib
inputs = pathlib.Path(os.environ.get("ECG_KAGGLE_INPUT", "/kaggle/input"))  # Kaggle's folder (a rehearsal sets its own)
code = next((p.parents[1] for depth in range(1, 5) for p in sorted(inputs.glob("*/" * depth + "utils/__init__.py"))),
            next((p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / "utils/__init__.py").is_file()), None))
if code is None:
    raise SystemExit(f"no code under {inputs} nor in {pathlib.Path.cwd()}: attach ecg-photo-reader-code (make kaggle-code, "
                     "then kaggle datasets create -p dist/kaggle-code --dir-mode zip)"
                     + ("; a utils.zip is there unextracted: upload the folder again" if any(inputs.glob("**/utils.zip")) else ""))
sys.path.insert(0, str(code))
import utils"""
PRELUDE = CODE_FINDER + """
print(utils.ensure_packages())  # on Kaggle: installs what its image lacks, from an attached wheels dataset"""
RUNNER = REPO_ROOT / "kaggle" / "runner.ipynb"


def literal(value) -> str:
    """A default as Python source (strings in double quotes, as the cells have always had them)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def parameter_line(name: str) -> str:
    if name not in OPTION_BY_NAME:
        raise ConfigError(f"the parameters cell declares {name!r}, which is not a configuration key")
    o = OPTION_BY_NAME[name]
    line = f"{name}: {o.type.__name__} = {literal(o.default)}"
    if "=" in o.help + literal(o.default):  # papermill skips a line with a second '=': the help goes above it
        return f"# {name}: {o.help}\n{line}  # {name}'s help is on the line above"
    return f"{line}  # {o.help}"


def parameters_cell(names: list[str]) -> str:
    return "\n".join([HEADER, *(parameter_line(n) for n in names)])


def parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ConfigError(f"a notebook needs exactly one cell tagged 'parameters'; found {len(tagged)}")
    return tagged[0]


def declared(nb) -> list[str]:
    """The keys the parameters cell declares, in its order."""
    tree = ast.parse(nb.cells[parameters_index(nb)].source)
    return [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def prelude_index(nb) -> int:
    """The code cell after the parameters cell: it opens with the prelude."""
    start = parameters_index(nb) + 1
    return next(i for i in range(start, len(nb.cells)) if nb.cells[i].cell_type == "code")


def with_prelude(source: str, prelude: str = PRELUDE, marker: str = "ensure_packages()") -> str:
    """The cell's source with the prelude on top (an older prelude, up to its line holding `marker`, replaced)."""
    lines = source.split("\n")
    end = next((i for i, line in enumerate(lines) if marker in line), -1)
    rest = "\n".join(lines[end + 1:]) if end >= 0 and end < 16 else source
    return prelude + ("\n" + rest if rest else "")


def written(nb, runner: bool = False) -> list[tuple[int, str]]:
    """(cell index, source) of each cell whose written form differs from what the notebook holds. The runner notebook
    has its own parameters (not configuration keys): only its prelude, the code finder, is written."""
    p, q = parameters_index(nb), prelude_index(nb)
    if runner:
        want = {q: with_prelude(nb.cells[q].source, CODE_FINDER, "import utils")}
    else:
        want = {p: parameters_cell(declared(nb)), q: with_prelude(nb.cells[q].source)}
    return [(i, s) for i, s in want.items() if nb.cells[i].source != s]


def write_cells(paths: list[Path], check: bool = False) -> list[str]:
    """Rewrite (or with `check`, only name) every parameters cell and prelude that differs; returns the names."""
    changed = []
    for path in paths:
        with warnings.catch_warnings():  # nbformat gives a cell without an id one as it reads
            warnings.simplefilter("ignore", nbformat.validator.MissingIDFieldWarning)
            nb = nbformat.read(str(path), as_version=4)
        try:
            diffs = written(nb, runner=Path(path).resolve() == RUNNER)
        except ConfigError as e:
            raise ConfigError(f"{path.name}: {e}") from None
        for i, source in diffs:
            changed.append(f"{path.name}: cell {i + 1} ({'parameters' if i == parameters_index(nb) else 'prelude'})")
            nb.cells[i].source = source
        if diffs and not check:
            atomic_write_text(path, nbformat.writes(nb) + "\n")
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline.cells", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path,
                    help="notebooks (default: every one in notebooks/ and the Kaggle runner)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the cells that differ")
    add_debug(ap)

    def run(a) -> int:
        changed = write_cells(a.notebooks or [*sorted(NOTEBOOK_DIR.glob("*.ipynb")), RUNNER], a.check)
        verb = "differ from utils/core/config.py" if a.check else "rewritten"
        print("\n".join(f"{c} {verb}" for c in changed) or "every parameters cell and prelude is as written")
        return 1 if a.check and changed else 0

    return run_cli(run, ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
