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

Writes `results.md` in the rehearsal's folder (a new folder each run) and exits non-zero naming what failed. Each
stand-in image (about 8 GB: Kaggle's torch with its CUDA libraries) is removed once its stand-in is done, passed or
failed; a new rehearsal builds it again from the pins. Before building one, the free space is checked against
`IMAGE_NEED_GB`, and a shortfall is named with what earlier rehearsals' images still hold.
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
import tempfile
import time
from pathlib import Path

from packaging.version import Version

from utils.core.cli import add_debug, run_cli
from utils.core.paths import REPO_ROOT
from utils.pipeline.wheels import IMAGE_FILE, pip_env, read_pins
from utils.synth.dataset import generate_dataset
from utils.synth.generate import SynthSettings

USER = "rehearsal"
PROFILE = "smoke"  # the runner's profile here; the README's paths name the kaggle profile
COMPETITION = "bhf-data-science-centre-ecg-challenge"
OVERRIDES = "target=competition synth_photo_train=0 synth_photo_test=0 disk_budget_gb=20 segmenter=train"
# The disk a stand-in needs at its peak (13.0 GB measured on 2026-12-07): the image (8.0 GB installed, 4.3 GB of it
# nvidia's CUDA libraries), pip's unpacked downloads while it installs, and the smoke run's data
IMAGE_NEED_GB = 14.0


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


MIN_CLI = "1.8.4"  # the first kaggle CLI that reads machine_shape (the two T4s) from kernel-metadata.json


def install_cli(args: list[str], venv: Path, log: Path) -> Path:
    """`pip install "kaggle>=..." ...` as the README says it, into an environment of the rehearsal's own."""
    from packaging.requirements import Requirement

    wanted = [Requirement(a) for a in args if not a.startswith("-")]
    cli = next((r for r in wanted if r.name == "kaggle"), None)
    if cli is None or not any(s.operator == ">=" and Version(s.version) >= Version(MIN_CLI) for s in cli.specifier):
        raise RehearsalFailed(f"the README installs the kaggle CLI as {args}: it must ask for kaggle>={MIN_CLI}, the "
                              f"first that reads machine_shape (an older one silently gives the default accelerator)")
    _run([sys.executable, "-m", "venv", str(venv)], log)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args], log, env=pip_env())
    return venv / "bin" / "kaggle"


def upload(folder: Path, inputs: Path, zip_dirs: bool) -> str:
    """`kaggle datasets create -p DIR [--dir-mode zip]` as Kaggle serves it: the CLI uploads the folder's files and,
    with --dir-mode zip, each sub-folder as a zip archive that Kaggle unpacks into a folder of that name; without it
    the sub-folders are skipped. Laid out where a session mounts it (input/datasets/<owner>/<slug>)."""
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    owner, slug = meta["id"].split("/", 1)
    dest = inputs / "datasets" / owner / slug
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for item in sorted(folder.iterdir()):
            if item.name == "dataset-metadata.json":
                continue
            if item.is_file():
                shutil.copy2(item, dest / item.name)
            elif zip_dirs:  # packed as the CLI packs it, unpacked as Kaggle does: what the round trip keeps
                archive = shutil.make_archive(str(Path(tmp) / item.name), "zip", root_dir=item)
                shutil.unpack_archive(archive, dest / item.name, "zip")
    return meta["id"]


def follow_readme(commands: list[str], root: Path, log: Path, run_kernel) -> dict:
    """Every command of the README's Kaggle block in its order: pip and make run here; the kaggle CLI's version is
    asked of the CLI installed; `datasets create` lays the upload out as Kaggle serves it, `datasets status` marks it
    ready, `kernels push` (only once each dataset it attaches is ready) runs the runner through `run_kernel(runner)`
    (which returns the session's working folder), `kernels output` fetches that folder's files, `competitions submit`
    checks the file it is given. Returns what was done."""
    inputs, done = root / "input", {"created": set(), "ready": set(), "cli": None, "working": None, "submitted": None}
    for cmd in commands:
        args = shlex.split(cmd.replace("alice", USER))
        if args[:2] == ["pip", "install"]:
            done["cli"] = install_cli(args[2:], root / "cli", log)
        elif args == ["kaggle", "--version"]:
            said = _run([str(done["cli"] or "kaggle"), "--version"], log)
            found = re.search(r"(\d+\.\d+(?:\.\d+)?)", said)
            if found is None or Version(found.group(1)) < Version(MIN_CLI):
                raise RehearsalFailed(f"kaggle --version said {said.strip()!r}: {MIN_CLI} or newer is needed")
            done["cli_version"] = found.group(1)
        elif args[:1] == ["make"]:
            if "kaggle-weights" not in args:  # the weights need the model hubs (see the module's doc)
                _run(args, log, cwd=REPO_ROOT)
        elif args[:3] == ["kaggle", "datasets", "create"]:
            folder = REPO_ROOT / args[args.index("-p") + 1]
            if "kaggle-weights" not in folder.parts:
                zipped = "--dir-mode" in args and args[args.index("--dir-mode") + 1] == "zip"
                done["created"].add(upload(folder, inputs, zipped))
        elif args[:3] == ["kaggle", "datasets", "status"]:
            if args[3] not in done["created"]:
                raise RehearsalFailed(f"{cmd}: no such dataset was created before")
            done["ready"].add(args[3])
        elif args[:3] == ["kaggle", "kernels", "push"]:
            folder = REPO_ROOT / args[args.index("-p") + 1]
            meta = json.loads((folder / "kernel-metadata.json").read_text())
            waiting = sorted(set(meta["dataset_sources"]) & done["created"] - done["ready"])
            if waiting:
                raise RehearsalFailed(f"the README pushes the runner before {waiting} is ready (kaggle datasets status)")
            done["working"] = run_kernel(folder / meta["code_file"])
        elif args[:3] in (["kaggle", "kernels", "status"], ["kaggle", "kernels", "output"]):
            if done["working"] is None:
                raise RehearsalFailed(f"{cmd}: the runner was not pushed before")
            if args[2] == "output":  # the session has ended (the runner ran to its end above): its files, those
                fetch(done["working"], root / args[args.index("-p") + 1],  # the pattern names where one is given
                      args[args.index("--file-pattern") + 1] if "--file-pattern" in args else "")
        elif args[:3] == ["kaggle", "competitions", "submit"]:
            done["submitted"] = root / args[args.index("-f") + 1]
        else:
            raise RehearsalFailed(f"README command not understood by the rehearsal: {cmd}")
    if done["working"] is None or done["submitted"] is None:
        raise RehearsalFailed("the README's Kaggle commands must push the runner and submit its CSV")
    return done


def fetch(working: Path, dest: Path, pattern: str = "") -> None:
    """`kaggle kernels output`: the session's files, those whose path in the output matches `pattern` (a regular
    expression searched in it, as the CLI does) where one is given; none matching is a failure."""
    files = [p for p in working.rglob("*") if p.is_file() and re.search(pattern, p.relative_to(working).as_posix())]
    if not files:
        raise RehearsalFailed(f"kaggle kernels output --file-pattern {pattern!r}: no file of the output matches")
    for p in files:
        (dest / p.relative_to(working)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / p.relative_to(working))


def make_competition(folder: Path) -> None:
    """A small competition as Kaggle gives it: photos, the training labels and a sample submission, nothing else."""
    generate_dataset(folder, SynthSettings(style="photo", page_width=440, page_height=340, photo_max_side=560),
                     n_train=12, n_test=4, workers=1, progress=False)
    for name in ("annotations", "synth.json", "test_labels.csv", "failures.csv"):
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


# The second stand-in: Kaggle's next image as it may come, one package we pin exactly gone and another moved
MOVED_IMAGE = {"segment-anything": None, "albumentations": "2.0.7"}


def make_image(venv: Path, python: str, log: Path, changes: dict | None = None) -> Path:
    """The stand-in for Kaggle's image: a new environment of `python` with the image's versions, from PyPI; `changes`
    removes a package (None) or moves it to another version."""
    _run([python, "-m", "venv", str(venv)], log)
    py = venv / "bin" / "python"
    pins = {**read_pins(IMAGE_FILE), **(changes or {})}
    _run([str(py), "-m", "pip", "install", "-q", "--only-binary=:all:",
          *(f"{n}=={v}" for n, v in pins.items() if v is not None)], log, env=pip_env())
    return py


def check_free(root: Path, need_gb: float = IMAGE_NEED_GB) -> float:
    """The free space under root, in GB; a shortfall raises, naming earlier rehearsals' images that still hold some."""
    free = shutil.disk_usage(root).free / 1e9
    if free >= need_gb:
        return free
    left = sorted(root.parent.parent.glob("*/stand-in-*/image"))  # root: <rehearsals>/<run>/stand-in-K
    held = sum(f.stat().st_size for d in left for f in d.rglob("*") if f.is_file() and not f.is_symlink()) / 1e9
    raise RehearsalFailed(f"{free:.1f} GB free under {root}; a stand-in of Kaggle's image needs about {need_gb:.0f} GB"
                          + (f". {len(left)} image(s) of earlier rehearsals hold {held:.1f} GB: "
                             f"{', '.join(map(str, left))}" if left else ""))


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


def run_runner(py: Path, runner: Path, root: Path, working: Path, log: Path) -> tuple[Path, bool]:
    """The runner notebook, executed as Kaggle's Run All would, offline, with its defaults but the profile (smoke)
    and the overrides; returns the executed copy and whether the internet was really cut."""
    env = pip_env()
    env.update(ECG_KAGGLE_INPUT=str(root / "input"), ECG_KAGGLE_WORKING=str(working),
               ECG_KAGGLE_SCRATCH=str(root / "temp"),
               KAGGLE_KERNEL_RUN_TYPE="Batch", PIP_NO_INDEX="1", PATH=f"{py.parent}{os.pathsep}{env['PATH']}")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    out = working / "runner.ipynb"
    prefix = _offline_prefix()
    _run([*prefix, str(py), "-m", "papermill", str(runner), str(out), "-k", "python3", "--cwd", str(working),
          "-p", "profile", PROFILE, "-p", "overrides", OVERRIDES], log, env=env)
    return out, bool(prefix)


def check_outputs(submitted: Path, competition: Path, working: Path) -> dict:
    """The submission the README submits, in the sample's layout, and the Grad-CAM report beside it."""
    import pandas as pd

    if not submitted.is_file():
        raise RehearsalFailed(f"no submission at {submitted}")
    sub, sample = pd.read_csv(submitted, dtype=str), pd.read_csv(competition / "sample_submission.csv", dtype=str)
    if list(sub.columns) != list(sample.columns) or list(sub.iloc[:, 0]) != list(sample.iloc[:, 0]):
        raise RehearsalFailed(f"{submitted}: columns or ids differ from the sample submission's")
    reports = sorted(working.glob(f"outputs/{PROFILE}/*/06_gradcam/*.html"))
    if not reports:
        raise RehearsalFailed(f"no Grad-CAM report (*.html) under {working / 'outputs' / PROFILE}")
    files = [p for p in working.rglob("*") if p.is_file() and not p.is_symlink()]
    drawn = sorted({p.name for p in working.glob(f"outputs/**/synth-*")})
    if drawn:
        raise RehearsalFailed(f"the synthetic sets {drawn} are in the saved output {working}: they belong under "
                              f"data_root (/kaggle/temp), drawn again by a session that needs them")
    return {"submission_rows": len(sub), "report": str(reports[0]),
            "saved": f"{sum(p.stat().st_size for p in files) / 1e6:.1f} MB in {len(files)} files"}


def rehearse(root: Path, python: str, changes: dict | None = None) -> dict:
    """The README's Kaggle block on a stand-in of Kaggle's image (changed by `changes` for the second stand-in)."""
    root.mkdir(parents=True)
    log, timings, inputs, found = root / "rehearsal.log", {}, root / "input", {}
    competition = inputs / "competitions" / COMPETITION

    def timed(name, fn, *a):
        started = time.time()
        out = fn(*a)
        timings[name] = round(time.time() - started)
        print(f"rehearsal: {name} done in {timings[name]} s", flush=True)
        return out

    def run_kernel(runner: Path) -> Path:
        timed("competition folder", make_competition, competition)
        found["free_gb"] = check_free(root)
        py = timed(f"stand-in image ({python}{', changed' if changes else ''})", make_image, root / "image", python,
                   log, changes)
        found["python"] = subprocess.run([str(py), "-c", "import sys; print(sys.version.split()[0])"],
                                         capture_output=True, text=True).stdout.strip()
        for p in inputs.rglob("*"):  # read-only as Kaggle mounts it (root ignores modes: the digest below checks)
            p.chmod(p.stat().st_mode & ~0o222)
        before, working = tree_state(inputs), root / "working"
        working.mkdir()
        found["executed"], found["offline"] = timed("runner notebook, smoke profile", run_runner, py, runner, root,
                                                    working, log)
        if tree_state(inputs) != before:
            raise RehearsalFailed(f"something under {inputs} changed: Kaggle's input is read-only")
        return working

    try:
        done = timed("README's Kaggle commands (the runner among them)", follow_readme, readme_commands(), root, log,
                     run_kernel)
    finally:  # the image is 8 GB and is built again from the pins by the next rehearsal
        shutil.rmtree(root / "image", ignore_errors=True)
    submitted = Path(str(done["submitted"]).replace("/outputs/kaggle/", f"/outputs/{PROFILE}/"))
    found.update(check_outputs(submitted, competition, root / "working"))
    installed = re.search(r"installed \[[^\]]*\] from [^\"\\]+", found.pop("executed").read_text())
    return {**found, "timings_s": timings, "cli": done.get("cli_version"), "changes": changes or {},
            "install": installed.group(0) if installed else "(nothing installed: the image had every package)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline.rehearsal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO_ROOT / "outputs" / "kaggle-rehearsal",
                    help="where each rehearsal gets a new folder")
    ap.add_argument("--python", default="3.12", help="Kaggle's Python version for the stand-in image")
    ap.add_argument("--no-moved", dest="moved", action="store_false",
                    help="leave out the second stand-in (the image with a pinned package gone and one moved)")
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
    stands = [("Kaggle's image as listed", None)] + ([("the image moved on", MOVED_IMAGE)] if a.moved else [])
    lines = [f"# Kaggle rehearsal {root.name}", ""]
    for k, (title, changes) in enumerate(stands):
        result = rehearse(root / f"stand-in-{k + 1}", python, changes)
        lines += [f"## Stand-in {k + 1}: {title}", "",
                  f"- Python {result['python']} ({IMAGE_FILE.name}"
                  + (f", changed: {', '.join(f'{n} ' + (f'at {v}' if v else 'removed') for n, v in changes.items())}"
                     if changes else "") + f"), internet {'cut (network namespace)' if result['offline'] else 'not cut: no index'}",
                  f"- the image: built with {result['free_gb']:.0f} GB free, removed once the stand-in was done",
                  f"- kaggle CLI {result['cli']} (the README's install and version check)", f"- {result['install']}",
                  f"- submission: {result['submission_rows']} rows, ids and columns of the sample",
                  f"- Grad-CAM report: {result['report']}",
                  f"- the session's saved output (/kaggle/working): {result['saved']}; the synthetic sets drawn "
                  f"under /kaggle/temp, not saved", "", "| part | seconds |", "| --- | --- |"]
        lines += [f"| {name} | {v} |" for name, v in result["timings_s"].items()] + [""]
    (root / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
