"""`make gpu-check` at the CPU's tiny scale: the same code a GPU runs, both files written, CUDA parts skipped."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from utils.bench import gpu


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_writes_both_files(tmp_path):
    out = gpu.run_check(tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert results["device"]["name"] == "no GPU: CPU figures only" and results["device"]["gpus"] == 0
    training = pd.DataFrame(results["training"])
    assert len(training) == 4 and set(training["precision"]) == {"fp32"}  # 2 backbones x channels-last on/off
    assert (training["images_per_s"] > 0).all() and (training["gflop_forward"] > 0).all()
    assert set(training["backbone"]) == {"test_convnext", "efficientnet_lite0"}
    assert results["loader"]["images"] == 16 and results["loader"]["images_per_s"] > 0
    kaggle_cores = results["loader_at_kaggles_4_cores"]
    assert kaggle_cores["cores"] == min(4, len(os.sched_getaffinity(0))) and kaggle_cores["images"] == 40
    assert kaggle_cores["images_per_s"] > 0 and kaggle_cores["two_t4s_consume_images_per_s"] > 10
    assert results["ddp"]["processes"] == 2 and results["ddp"]["backend"] == "gloo" and results["ddp"]["epochs_run"] == 2
    assert results["smoke_chain"]["status"].startswith("skipped: no GPU")
    assert results["kaggle_estimates"][0]["estimate"].startswith("none")
    md = (out / "results.md").read_text()
    assert "no GPU: CPU figures only" in md and "## training" in md and "| backbone" in md
    again = gpu.run_check(tmp_path)  # never overwrites: a new folder
    assert again != out and again.name == f"{out.name}-2"


def test_peaks_and_t4_estimates_from_a_measured_rate():
    from utils.core.device import peak_tflops

    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312 and peak_tflops("Tesla T4", "fp16") == 65
    assert peak_tflops("NVIDIA A10", "fp16") == 125 and peak_tflops("NVIDIA H200", "bf16") == 989
    assert peak_tflops("some new GPU", "fp16") is None
    from utils.pipeline.config import DEFAULTS

    size = f"{DEFAULTS['image_height']}x{DEFAULTS['image_width']}"
    table = pd.DataFrame([{"backbone": DEFAULTS["backbone"], "size": size, "precision": "fp16",
                           "channels_last": True, "images_per_s": 989.0}])
    est = gpu.kaggle_estimates(table, {"name": "NVIDIA H200"}).set_index("what")
    # 989 images/s on a 989-TFLOP/s GPU -> 65 images/s per T4, 130 on two
    stage2 = est.loc["Stage II, 15k photos x 5 folds"]
    expected = 15_000 * (4 / 5 + 1 / 5 / 3) * 5 * DEFAULTS["stage2_epochs"] / 130 / 3600
    assert stage2["hours_on_2xT4"] == pytest.approx(expected, abs=0.05) and stage2["kind"] == "estimate"
    assert "130.0 images/s" in stage2["basis"]


# The packages of the GPU machines' image this project measures on (its pip list; Python 3.12, torch 2.11).
GPU_IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-ml-py onnx onnxruntime opencv-python-headless optax opt-einsum packaging pandas
pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pytest python-dateutil pytorch-lightning pyyaml regex requests rich
safetensors scikit-image scikit-learn scipy seaborn sentencepiece setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchvision tqdm transformers triton typer typing-extensions typing-inspect urllib3 wheel wrapt xarray
xxhash yarl zipp""".split()


def _norm(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", re.split(r"[=<>~!\[ ;]", name.strip())[0]).lower()


def test_gpu_wheels_carry_every_requirement_the_gpu_image_lacks():
    """The requirements and everything they depend on (this environment's metadata), less the image's packages, are
    all in `make gpu-wheels`'s list."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    from utils.core.paths import REPO_ROOT
    from utils.pipeline.wheels import GPU_LEFT_OUT, GPU_WHEELS, SOURCE_ONLY

    roots = [_norm(line) for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    seen, todo = {"torch", "torchvision"}, list(roots)  # the image's own builds, with their CUDA libraries
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    carried = {_norm(w) for w in GPU_WHEELS + SOURCE_ONLY}
    missing = sorted(seen - carried - {_norm(p) for p in GPU_IMAGE} - set(GPU_LEFT_OUT))
    assert not missing, f"make gpu-wheels lacks {missing}"
    assert {"papermill", "ipykernel", "ultralytics", "albumentations", "wfdb"} <= carried
