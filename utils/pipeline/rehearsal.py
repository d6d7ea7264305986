"""A Kaggle session rehearsed as a user runs it: `python -m utils.pipeline.rehearsal` (make kaggle-rehearsal).

1. The README's "On Kaggle" commands, word for word (`make kaggle-code`, `make kaggle-wheels`), with a user name;
   `kaggle datasets create -p DIR` becomes DIR laid out where Kaggle mounts a dataset
   (`input/datasets/<user>/<slug>`), `kaggle kernels push -p DIR` takes the runner from DIR. `make kaggle-weights`
   needs the model hubs and is left out: the smoke profile trains its small backbone from scratch.
2. A stand-in for Kaggle's image: a new virtual environment of Kaggle's Python (3.12) holding only the versions of
   `kaggle/image-packages.txt`, installed from PyPI as Kaggle's image is built.
3. A small competition folder (synthetic photos, a sample submission) where Kaggle mounts a competition.
4. The runner notebook executed by papermill in that environment, as Kaggle's "Run All" would, with the internet off
   (a network namespace with loopback only, where the machine allows one; else no package index), input read-only
   (checked: nothing under it changes), /kaggle/working writable: it installs from the attached wheels, runs steps
   00-06 on the smoke profile and writes the submission and the Grad-CAM report.

Writes `results.md` in the rehearsal's folder (a new folder each run) and exits non-zero naming what failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from utils.core.cli import add_debug, run_cli
from utils.core.paths import REPO_ROOT
from utils.pipeline.wheels import IMAGE_FILE, pip_env, read_pins
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings

USER = "rehearsal"
COMPETITION = "bhf-data-science-centre-ecg-challenge"
OVERRIDES = "target=competition synth_photo_train=0 synth_photo_test=0 disk_budget_gb=20"


class RehearsalFailed(RuntimeError):
    """A step of the rehearsal failed; the message says which and where its log is."""


def readme_commands(readme: Path = REPO_ROOT / "README.md") -> list[str]:
    """The shell commands of the first fenced bash block of the README's "On Kaggle" section, comments removed."""
    text = Path(readme).read_text()
    start = text.find("\n## On Kaggle")
    if start < 0:
        raise RehearsalFailed(f"{readme}: no '## On Kaggle' section")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    if block is None:
        raise RehearsalFailed(f"{readme}: the 'On Kaggle' section has no ```bash block")
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _run(cmd, log: Path, **kw) -> str:
    """Run a command, its output appended to `log`; a failure raises RehearsalFailed naming the command and the log."""
    started, shown = time.time(), shlex.join(map(str, cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    with open(log, "a") as fh:
        fh.write(f"$ {shown}\n{done.stdout}{done.stderr}[exit {done.returncode} after {time.time() - started:.0f} s]\n")
    if done.returncode:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RehearsalFailed(f"{shown} exited {done.returncode} (log: {log}):\n" + "\n".join(tail))
    return done.stdout


def follow_readme(commands: list[str], inputs: Path, log: Path) -> Path:
    """Run the README's make commands and lay out what `kaggle datasets create` / `kernels push` would upload;
    returns the runner notebook."""
    runner = None
    for cmd in commands:
        args = shlex.split(cmd.replace("alice", USER))
        if args[:1] == ["make"]:
            if "kaggle-weights" in args:
                continue  # needs the model hubs (see the module's doc)
            _run(args, log, cwd=REPO_ROOT)
        elif args[:3] == ["kaggle", "datasets", "create"]:
            folder = REPO_ROOT / args[args.index("-p") + 1]
            if "kaggle-weights" in folder.parts:
                continue  # the weights folders (not made here)
            meta = json.loads((folder / "dataset-metadata.json").read_text())
            owner, slug = meta["id"].split("/", 1)
            dest = inputs / "datasets" / owner / slug
            shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("dataset-metadata.json"))
        elif args[:3] == ["kaggle", "kernels", "push"]:
            folder = REPO_ROOT / args[args.index("-p") + 1]
            meta = json.loads((folder / "kernel-metadata.json").read_text())
            runner = folder / meta["code_file"]
        else:
            raise RehearsalFailed(f"README command not understood by the rehearsal: {cmd}")
    if runner is None:
        raise RehearsalFailed("the README's Kaggle commands push no runner (kaggle kernels push -p ...)")
    return runner


def make_competition(folder: Path) -> None:
    """A small competition as Kaggle gives it: photos, the training labels and a sample submission, nothing else."""
    generate_dataset(folder, SynthSettings(style="photo", page_width=440, page_height=340, photo_max_side=560),
                     n_train=12, n_test=4, workers=1, progress=False)
    for name in ("annotations", "synth.json", "test_labels.csv", "failures.csv"):
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def make_image(venv: Path, python: str, log: Path) -> Path:
    """The stand-in for Kaggle's image: a new environment of `python` with the image's versions, from PyPI."""
    _run([python, "-m", "venv", str(venv)], log)
    py = venv / "bin" / "python"
    pins = [f"{n}=={v}" for n, v in read_pins(IMAGE_FILE).items()]
    _run([str(py), "-m", "pip", "install", "-q", "--only-binary=:all:", *pins], log, env=pip_env())
    return py


def tree_state(root: Path) -> str:
    """A digest of every path, size and modification time under root: equal before and after = nothing written."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _offline_prefix() -> list[str]:
    """A network namespace with loopback only (the kernels talk over it), where this machine lets us make one."""
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "offline"] if probe.returncode == 0 else []


def run_runner(py: Path, runner: Path, root: Path, log: Path) -> tuple[Path, bool]:
    """The runner notebook, executed as Kaggle's Run All would, offline; returns the executed copy and whether the
    internet was really cut."""
    env = pip_env()
    env.update(ECG_KAGGLE_INPUT=str(root / "input"), ECG_KAGGLE_WORKING=str(root / "working"),
               KAGGLE_KERNEL_RUN_TYPE="Batch", PIP_NO_INDEX="1", PATH=f"{py.parent}{os.pathsep}{env['PATH']}")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    out = root / "working" / "runner.ipynb"
    prefix = _offline_prefix()
    _run([*prefix, str(py), "-m", "papermill", str(runner), str(out), "-k", "python3", "--cwd", str(root / "working"),
          "-p", "profile", "smoke", "-p", "run_name", USER, "-p", "overrides", OVERRIDES], log, env=env)
    return out, bool(prefix)


def check_outputs(root: Path, competition: Path) -> dict:
    """The submission in the sample's layout and the Grad-CAM report, where the runner said it would put them."""
    import pandas as pd

    run = root / "working" / "outputs" / "smoke" / USER
    sub_path = run / "05_ensemble" / "submission.csv"
    if not sub_path.is_file():
        raise RehearsalFailed(f"no submission at {sub_path}")
    sub, sample = pd.read_csv(sub_path, dtype=str), pd.read_csv(competition / "sample_submission.csv", dtype=str)
    if list(sub.columns) != list(sample.columns) or list(sub.iloc[:, 0]) != list(sample.iloc[:, 0]):
        raise RehearsalFailed(f"{sub_path}: columns or ids differ from the sample submission's")
    reports = sorted((run / "06_gradcam").glob("*.html"))
    if not reports:
        raise RehearsalFailed(f"no Grad-CAM report (*.html) in {run / '06_gradcam'}")
    return {"run": str(run), "submission_rows": len(sub), "report": str(reports[0])}


def rehearse(root: Path, python: str) -> dict:
    root.mkdir(parents=True)
    log, timings = root / "rehearsal.log", {}
    inputs = root / "input"
    (root / "working").mkdir()

    def timed(name, fn, *a):
        started = time.time()
        out = fn(*a)
        timings[name] = round(time.time() - started)
        print(f"rehearsal: {name} done in {timings[name]} s", flush=True)
        return out

    runner = timed("README's Kaggle commands", follow_readme, readme_commands(), inputs, log)
    competition = inputs / "competitions" / COMPETITION
    timed("competition folder", make_competition, competition)
    py = timed(f"stand-in image ({python})", make_image, root / "image", python, log)
    version = subprocess.run([str(py), "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True).stdout.strip()
    for p in inputs.rglob("*"):  # read-only as Kaggle mounts it (root ignores modes: the digest below checks)
        p.chmod(p.stat().st_mode & ~0o222)
    before = tree_state(inputs)
    executed, offline = timed("runner notebook, smoke profile", run_runner, py, runner, root, log)
    if tree_state(inputs) != before:
        raise RehearsalFailed(f"something under {inputs} changed: Kaggle's input is read-only")
    found = check_outputs(root, competition)
    text = executed.read_text()
    installed = re.search(r"installed \[[^\]]*\] from [^\"\\]+", text)
    return {"python": version, "offline": offline, "timings_s": timings, **found,
            "install": installed.group(0) if installed else "(nothing installed: the image had every package)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline.rehearsal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO_ROOT / "outputs" / "kaggle-rehearsal",
                    help="where each rehearsal gets a new folder")
    ap.add_argument("--python", default="3.12", help="Kaggle's Python version for the stand-in image")
    return run_cli(_main, add_debug(ap).parse_args(argv))


def find_python(version: str) -> str:
    """An interpreter of `version` ("3.12"): on PATH, or one pyenv keeps (its shim answers only when selected)."""
    candidates = [f"python{version}", *sorted(map(str, Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")),
                                              reverse=True), f"/usr/bin/python{version}"]
    for exe in candidates:
        try:
            done = subprocess.run([exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return exe
    raise RehearsalFailed(f"no Python {version} with venv here (tried {', '.join(candidates)}): the rehearsal needs "
                          f"Kaggle's Python")


def _main(a) -> int:
    python = find_python(a.python)
    a.root.mkdir(parents=True, exist_ok=True)
    root = a.root / time.strftime("%Y-%m-%d-%H%M%S")
    result = rehearse(root, python)
    lines = [f"# Kaggle rehearsal {root.name}", "", f"- Python {result['python']} (stand-in image: "
             f"{IMAGE_FILE.name}), internet {'cut (network namespace)' if result['offline'] else 'not cut: no index'}",
             f"- {result['install']}", f"- submission: {result['submission_rows']} rows, ids and columns of the sample",
             f"- Grad-CAM report: {result['report']}", "", "| part | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in result["timings_s"].items()]
    (root / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
