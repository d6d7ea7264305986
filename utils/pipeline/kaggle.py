"""Kaggle readiness: the code as a dataset, wheels of what Kaggle lacks, packages installed offline.

    python -m utils.pipeline.kaggle code --out dist/kaggle-code --user NAME
    python -m utils.pipeline.kaggle wheels --out dist/kaggle-wheels [--python 3.11]
    python -m utils.pipeline.kaggle weights --out dist/kaggle-weights       (on a machine with internet)
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from utils.core.cli import add_debug, run_cli
from utils.core.keys import settings_key
from utils.core.paths import INPUT_DEPTH, KAGGLE_INPUT, REPO_ROOT
from utils.pipeline.wheels import KAGGLE_PYTHONS, REQUIREMENTS, build_wheels, download_gpu_wheels, unmet_requirements

def find_wheels(input_root: Path | None) -> Path | None:
    """An attached dataset holding .whl files."""
    if input_root is None or not Path(input_root).is_dir():
        return None
    for depth in range(1, INPUT_DEPTH + 1):
        for folder in sorted(Path(input_root).glob("/".join(["*"] * depth))):
            if folder.is_dir() and any(folder.glob("*.whl")):
                return folder
    return None


def ensure_packages(input_root: Path | None = None, online: bool | None = None, wheels: Path | None = None) -> str:
    """Install what is missing: from an attached wheels dataset, else from PyPI when online; no-op otherwise.

    With `wheels` (a folder made by `make gpu-wheels`), every wheel in it is installed without resolving
    dependencies: the folder holds exactly what that machine's image lacks."""
    missing = unmet_requirements()
    if not missing:
        return "all packages present"
    base = [sys.executable, "-m", "pip", "install", "-q"]
    if wheels is not None:
        files = sorted(str(w) for w in Path(wheels).glob("*.whl"))
        if not files:
            raise FileNotFoundError(f"missing packages {missing}, and no .whl file in {wheels} (make gpu-wheels)")
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename

        here = set(sys_tags())
        foreign = sorted(Path(f).name for f in files if not parse_wheel_filename(Path(f).name)[3] & here)
        if foreign:
            raise RuntimeError(f"{len(foreign)} wheels in {wheels} do not install on this Python "
                               f"{sys.version_info[0]}.{sys.version_info[1]} (e.g. {foreign[0]}): run with the Python "
                               f"they were built for (make gpu-check GPU_PYTHON=python3.12), or build them for this one "
                               f"(make gpu-wheels ARGS='--python {sys.version_info[0]}.{sys.version_info[1]}')")
        subprocess.run(base + ["--no-index", "--no-deps"] + files, check=True)
        importlib.invalidate_caches()
        return f"installed {len(files)} wheels from {wheels}"
    if input_root is None:
        input_root = KAGGLE_INPUT
    wheels = find_wheels(input_root)
    if wheels is not None:
        cmd = base + ["--no-index", "--find-links", str(wheels), "-r", str(REQUIREMENTS)]
    elif online if online is not None else is_online():
        cmd = base + ["-r", str(REQUIREMENTS)]
    else:
        raise RuntimeError(f"missing packages {missing} and no internet: attach the wheels dataset built by "
                           f"`make kaggle-wheels` (any folder of .whl files under {input_root})")
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    return f"installed {missing} from {wheels or 'PyPI'}"


def is_online() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


CODE_TITLE, WHEELS_TITLE, KERNEL_TITLE = "ecg-photo-reader-code", "ecg-photo-reader-wheels", "ecg-photo-reader-runner"
# The weights folders `make kaggle-weights` writes, each uploaded as a dataset of that name.
WEIGHTS_TITLES = ("convnext-base-fb-in22k", "yolov8n", "sam-vit-b")
VERSION_FILE = "code_version.txt"


# Licence names the Kaggle CLI's dataset-metadata documentation lists (a subset)
KAGGLE_LICENCES = ("CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "GPL-2.0", "ODbL-1.0", "DbCL-1.0",
                   "copyright-authors", "other", "unknown")


def dataset_metadata(folder: Path, user: str, title: str, licence: str = "other") -> Path:
    """The dataset-metadata.json the kaggle CLI reads, with the owner's user name."""
    if licence not in KAGGLE_LICENCES:
        raise ValueError(f"licence {licence!r} is not one the Kaggle CLI documents: {', '.join(KAGGLE_LICENCES)}")
    if not user or user == "your-kaggle-username":
        raise ValueError("set KAGGLE_USER to your Kaggle user name (make kaggle-code KAGGLE_USER=alice): it names "
                         "the datasets and the notebook")
    meta = {"title": title, "id": f"{user}/{title}", "licenses": [{"name": licence}]}
    path = Path(folder) / "dataset-metadata.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def code_version(root: Path) -> str:
    """A hash of every file of the code, so the runner knows when an attached code dataset is newer than its copy."""
    files = sorted(p for d in ("utils", "notebooks") for p in (Path(root) / d).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return settings_key({str(p.relative_to(root)): settings_key(p.read_bytes().hex(), 16) for p in files}, 16)


def build_code_dataset(out: Path, user: str, title: str = CODE_TITLE) -> Path:
    """utils/, notebooks/, requirements, the README and its docs pages with the dataset-metadata.json the kaggle CLI reads, and the code's
    version; upload it whole with `kaggle datasets create -p DIR --dir-mode zip` (the CLI skips folders otherwise)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    shutil.copytree(REPO_ROOT / "utils", out / "utils", ignore=ignore)
    shutil.copytree(REPO_ROOT / "notebooks", out / "notebooks", ignore=ignore)
    for measured in ("gpu-check", "gpu-train"):  # the budget reads them
        if (REPO_ROOT / "docs" / measured).is_dir():
            shutil.copytree(REPO_ROOT / "docs" / measured, out / "docs" / measured, ignore=ignore)
    for name in ("requirements.txt", "README.md"):
        shutil.copy(REPO_ROOT / name, out / name)
    (out / "docs").mkdir(exist_ok=True)
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):  # the pages the README links to
        shutil.copy(page, out / "docs" / page.name)
    (out / VERSION_FILE).write_text(code_version(out) + "\n")
    dataset_metadata(out, user, title)
    return out


def sync_code(code: Path, work: Path) -> str:
    """A writable copy of the attached code for papermill, replaced whenever the attached version differs."""
    def version(folder: Path) -> str:
        f = Path(folder) / VERSION_FILE
        return f.read_text().strip() if f.is_file() else ""

    new, old = version(code), version(work) if Path(work).is_dir() else None
    if new and new == old:
        return f"code {new}: the copy in {work} is current"
    if Path(work).exists():
        shutil.rmtree(work)  # the old code only: run outputs live under /kaggle/working/outputs
    shutil.copytree(code, work, ignore=shutil.ignore_patterns("__pycache__"))
    return f"code {new or '(unversioned)'} copied to {work}" + (f" (was {old or 'unversioned'})" if old is not None else "")


def run_streamed(cmd: list[str], cwd: Path) -> str:
    """The pipeline in a child process, its log shown here as it goes; a stop of this kernel (the interrupt button, an
    error) stops the child too, which ends its own kernels and workers. A non-zero exit raises SystemExit."""
    import signal

    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as run:
        try:
            for line in run.stdout:
                print(line, end="")
        except BaseException:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(60)
            except subprocess.TimeoutExpired:
                run.kill()
            raise
    if run.returncode:
        raise SystemExit(f"the pipeline stopped (exit {run.returncode}): its message is above; re-run to resume")
    return "the pipeline finished"


def build_kernel(out: Path, user: str) -> Path:
    """The runner notebook with its kernel-metadata.json: two T4s, internet off, the code, wheels and weights datasets
    and the competition attached."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    template = json.loads((REPO_ROOT / "kaggle" / "kernel-metadata.json").read_text())
    meta = json.loads(json.dumps(template).replace("USER/", f"{user}/"))
    (out / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copy(REPO_ROOT / "kaggle" / meta["code_file"], out / meta["code_file"])
    return out


def export_weights(out: Path, user: str) -> Path:
    """On a machine with internet: ConvNeXt-Base 22k as safetensors, YOLOv8n, SAM ViT-B, each a dataset folder."""
    import timm
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    convnext, yolo, sam = (out / t for t in WEIGHTS_TITLES)
    for folder, title in zip((convnext, yolo, sam), WEIGHTS_TITLES):
        folder.mkdir(parents=True, exist_ok=True)
        dataset_metadata(folder, user, title)
    model = timm.create_model("convnext_base.fb_in22k", pretrained=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(convnext / "model.safetensors"))
    torch.hub.download_url_to_file("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                                   str(sam / "sam_vit_b_01ec64.pth"))
    from ultralytics import YOLO
    YOLO("yolov8n.pt").save(str(yolo / "yolov8n.pt"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline.kaggle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["code", "kernel", "wheels", "gpu-wheels", "weights"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--user", default=os.environ.get("KAGGLE_USER", ""), help="your Kaggle user name")
    ap.add_argument("--python", default="", help="target Pythons, comma-separated (wheels: 3.12,3.11, Kaggle's image "
                    "and the one before it; gpu-wheels: 3.12)")
    return run_cli(_build, add_debug(ap).parse_args(argv))


def _build(a) -> int:
    if a.what == "code":
        print(build_code_dataset(a.out, a.user))
    elif a.what == "kernel":
        print(build_kernel(a.out, a.user))
    elif a.what == "wheels":
        dataset_metadata(Path(tempfile.mkdtemp()), a.user, WHEELS_TITLE)  # a missing user fails before the download
        files = build_wheels(a.out, tuple(a.python.split(",")) if a.python else KAGGLE_PYTHONS)
        dataset_metadata(a.out, a.user, WHEELS_TITLE)
        print(f"{len(files)} wheels in {a.out}, {sum(f.stat().st_size for f in files) / 2 ** 20:.1f} MiB "
              f"(what Kaggle's image lacks; the list per Python in {Path(a.out) / 'wheels.json'})")
    elif a.what == "gpu-wheels":
        files = download_gpu_wheels(a.out, a.python or "3.12")
        print(f"{len(files)} wheels in {a.out}, {sum(f.stat().st_size for f in files) / 2 ** 20:.1f} MiB")
    else:
        print(export_weights(a.out, a.user))
    return 0


if __name__ == "__main__":
    sys.exit(main())
