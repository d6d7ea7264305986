"""The package's shape: folders are the notebooks' steps, imports run one way, one definition of each primitive."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parent.parent / "utils"
# lowest first: a module may import its own folder and any folder before it, never one after it
# The configuration and the run folders sit in core with the other primitives; the pipeline (the runner, the budget,
# Kaggle packaging) sits above the steps it runs and measures; the ablation grid runs whole pipelines. No exceptions.
LAYERS = ["core", "synth", "data", "preprocess", "digitise", "train", "ensemble", "gradcam", "pipeline", "ablations",
          "bench"]
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(UTILS.rglob("*.py")):
        parts = path.relative_to(UTILS.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import utils...` / `from utils... import names` in a file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("utils"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append(("." * node.level + (node.module or ""), [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("utils")]
    return found


def folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_sits_in_a_step_folder_or_the_bottom():
    loose = [m for m in modules() if m.count(".") == 1 and m != "utils" and folder(m) not in LAYERS]
    assert not loose, f"modules outside the step folders: {loose}"


def test_imports_run_one_way_without_private_names():
    mods = modules()
    wrong = []
    for mod, path in mods.items():
        if mod == "utils":
            continue
        mine = LAYERS.index(folder(mod))
        for target, names in imports(path):
            if target.startswith("."):
                wrong.append(f"{mod}: relative import {target}")
                continue
            theirs = folder(target)
            if theirs is not None and LAYERS.index(theirs) > mine:
                wrong.append(f"{mod} imports {target}, a later step")
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private and target != mod:
                wrong.append(f"{mod} imports private {private} from {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_between_modules():
    mods = modules()
    graph = {m: {t for t, _ in imports(p) if t in mods and t != m} for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m, trail):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                pytest.fail(f"import circle: {' -> '.join(trail + [m, t])}")
            if t not in state:
                visit(t, trail + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


# Modules that import the package's own modules inside functions, and why (everywhere else they sit at the top, so the
# graph reads from the file's head).
LATE_IMPORTS = {
    "utils": "ensure_packages imports utils.pipeline.kaggle when called, so `python -m utils.pipeline.kaggle` runs "
             "its module once",
    "utils.bench.gpu": "runs on a bare GPU machine: installs the wheels first, then imports what needs them",
}


def test_the_package_imports_itself_at_module_top():
    late = []
    for mod, path in modules().items():
        if mod in LATE_IMPORTS:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{mod}:{n.lineno} imports {n.module} inside {fn.name}()" for n in ast.walk(fn)
                         if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("utils")]
    assert not late, "\n".join(sorted(set(late)))


def test_no_module_over_the_size_limit():
    big = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("name", ["LABELS", "auroc_table", "bootstrap_auroc", "combine", "apply_temperature",
                                  "cam_maps", "leakage_guard", "settings_key", "pool_map", "run_cli"])
def test_one_definition_of_each_primitive(name):
    where = []
    for mod, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                where.append(mod)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                where.append(mod)
    assert len(where) == 1, f"{name} is defined in {where}"


def test_docs_links_resolve():
    """Every local link and picture of the README and the docs pages points at a file (or a heading) that exists, so
    moving a page or a section cannot leave a dangling link."""
    import re

    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    assert len(pages) >= 4
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                         for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)}
                if anchor not in slugs:
                    broken.append(f"{page.name}: {target} (no heading #{anchor})")
    assert not broken, broken


def test_one_inference_path():
    """The picture models' probabilities come from one forward pass (utils.train.engine.probabilities), and pictures
    reach it through one reader (Predictor.read): nothing else prepares pictures or runs the fold models for scores."""
    calls = {"probabilities": [], "fold_probs": [], "prepare": []}
    for mod, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name in calls and not (name == "prepare" and not isinstance(f, ast.Attribute)):
                    calls[name].append(mod)
    assert set(calls["probabilities"]) == {"utils.train.engine", "utils.ensemble.predictor"}, calls["probabilities"]
    assert calls["fold_probs"] == ["utils.ensemble.predictor"], calls["fold_probs"]
    assert calls["prepare"] == ["utils.ensemble.predictor"], calls["prepare"]
