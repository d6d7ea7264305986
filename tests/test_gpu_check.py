"""`make gpu-check` at the CPU's tiny scale: the same code a GPU runs, both files written, CUDA parts skipped."""
from __future__ import annotations

import argparse
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
    from utils.core.config import DEFAULTS

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


@pytest.mark.slow
def test_gpu_train_runs_on_the_cpu_and_writes_its_results(tmp_path):
    from utils.bench import gpu_train

    out = gpu_train.run(argparse.Namespace(
        minutes=8.0, out=tmp_path / "gt", compile="auto", backbone_weights="none", working=str(tmp_path / "w")))
    results = json.loads((out / "results.json").read_text())
    eff = pd.DataFrame(results["efficiency"])
    assert list(eff["setting"]) == list(gpu_train.SETTINGS) and (eff["images_per_s"].iloc[:3] > 0).all()
    assert eff["note"].iloc[3].startswith("not run: torch.compile is off on a CPU")
    assert eff["as_trained"].fillna(False).tolist() == [False, False, True, False]  # the last change that ran
    assert "needs a CUDA device" in results["t4_memory"]["status"]
    chain = results["chain"]
    assert "steps" in chain, chain.get("status")
    assert [s["step"] for s in chain["steps"]] == ["00_synthesize", "01_assemble", "02_preprocess", "03_stage1",
                                                   "04_stage2", "05_ensemble"]
    assert all(s["seconds"] > 0 for s in chain["steps"]) and chain["steps"][0]["pictures_per_s"] > 0
    assert [f["fit"] for f in chain["fits"]] == ["Stage I", "Stage II fold0", "Stage II fold1"]
    assert all(f["train_images_per_s"] > 0 and f["epochs"] >= 1 for f in chain["fits"])
    assert 0 <= chain["test_macro_auroc"] <= 1 and chain["real_check"].startswith("not run: the CPU scale")
    assert (out / "curves.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "## efficiency" in md and "## t4 memory" in md and "| Stage II fold1" in md and "Whole check:" in md


def test_gpu_train_refuses_the_t4_cap_without_cuda_and_sizes_the_chain_by_its_slowest_step():
    import torch

    from utils.bench.gpu_train import plan, t4_memory

    with pytest.raises(RuntimeError, match=r"the T4 memory check needs a CUDA device, and cpu is not one"):
        t4_memory("test_convnext", (64, 96), 4, 1, torch.device("cpu"))
    fast = {"scan": 0.1, "photo": 0.3, "prep": 0.05}
    assert plan(480, 0.5, fast, 16)["limited_by"] == "Stage I"  # a slow GPU: training bounds the counts
    slow_synth = plan(480, 500, {**fast, "scan": 50.0}, 4)
    assert slow_synth["limited_by"] == "synthesis" and slow_synth["synth_scan_train"] == 64  # never below 64
    p = plan(480, 100, fast, 16)
    assert p["synth_scan_train"] == min(p["bounds"].values()) and p["synth_photo_train"] == p["synth_scan_train"] // 3


def test_gpu_train_sizes_its_chain_from_timed_pictures_and_the_kaggle_profile_takes_its_overrides(tmp_path):
    import torch

    from utils.bench.gpu_train import chain_overrides, picture_seconds, plan
    from utils.core.config import resolve_config

    per = picture_seconds()
    assert set(per) == {"scan", "photo", "prep"} and all(0 < v < 60 for v in per.values())
    assert per["photo"] > per["scan"]  # a photo is a scan, then photographed
    counts = plan(300, 50, per, 2)
    args = argparse.Namespace(working=str(tmp_path), compile="auto", backbone_weights="none")
    profile, overrides = chain_overrides(torch.device("cuda"), counts, args)
    cfg = resolve_config(profile, overrides)  # every key known, every value of its type and choices
    assert profile == "kaggle" and cfg["backbone"] == "convnext_base.fb_in22k" and cfg["n_folds"] == 2
    assert cfg["synth_scan_train"] == counts["synth_scan_train"] and cfg["device"] == "cuda"
