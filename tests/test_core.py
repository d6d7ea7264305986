"""The shared primitives at the bottom of the package: pool, settings key, lists, the command-line wrapper, Grad-CAM."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from utils.core.cli import add_debug, run_cli
from utils.core.keys import settings_key, split_list
from utils.core.pool import pool_map


def square(x: int) -> int:
    return x * x


def test_pool_returns_results_in_order_in_processes_and_here():
    items = list(range(40))
    assert list(pool_map(square, items, workers=2, progress=False)) == [x * x for x in items]
    assert list(pool_map(square, items[:3], workers=2, progress=False)) == [0, 1, 4]  # small jobs: this process
    assert list(pool_map(square, [], progress=False)) == []


def test_settings_key_is_stable_and_sensitive():
    a = {"style": "scan", "seed": 1, "page": [1100, 850]}
    assert settings_key(a) == settings_key(dict(reversed(list(a.items())))) and len(settings_key(a)) == 10
    assert settings_key(a) != settings_key({**a, "seed": 2}) and len(settings_key(a, 8)) == 8
    assert split_list(" a, b,,c ,") == ["a", "b", "c"] and split_list("") == [] and split_list(None) == []


def test_cli_errors_are_one_line_unless_debug(capsys):
    def body(args):
        raise FileNotFoundError(f"--model {args.model}: no such file")

    parser = add_debug(argparse.ArgumentParser())
    parser.add_argument("--model", default="m.pt")
    assert run_cli(body, parser.parse_args([])) == 2
    assert capsys.readouterr().err == "error: --model m.pt: no such file\n"
    with pytest.raises(FileNotFoundError):
        run_cli(body, parser.parse_args(["--debug"]))
    assert run_cli(lambda a: None, parser.parse_args([])) == 0


@pytest.mark.parametrize("backbone", ["test_vit", "swin_atto_patch4_window7", "test_convnext"])
def test_one_gradcam_serves_transformers_and_cnns(backbone, tmp_path):
    """predict --gradcam goes through the same maps as step 06, reshape included (ViT and Swin need it)."""
    from utils.core.cam import cam_maps, save_overlay
    from utils.train.models import build_untrained

    torch.manual_seed(0)
    model = build_untrained(backbone, 5, (64, 96)).eval()
    x = torch.randn(1, 3, 64, 96)
    maps = cam_maps([model], x, "gradcam", [1, 3])
    assert maps.shape == (2, 64, 96) and np.isfinite(maps).all() and maps.max() <= 1.0 + 1e-6
    out = save_overlay(np.full((64, 96, 3), 200, np.uint8), maps[0], "AF 0.90", tmp_path / "cam.jpg")
    assert out.is_file() and out.stat().st_size > 0 and not math.isnan(float(maps.sum()))


@pytest.mark.parametrize("capability, amp, expected", [
    ((7, 5), True, "fp16"),   # T4: fp16 tensor cores, bf16 only emulated
    ((7, 0), True, "fp16"),   # V100
    ((8, 0), True, "bf16"),   # A100
    ((8, 9), True, "bf16"),   # L4
    ((9, 0), True, "bf16"),   # H100 / H200
    ((8, 0), False, "fp32"),  # amp off
    (None, True, "fp32"),     # no CUDA device
])
def test_precision_follows_the_compute_capability(capability, amp, expected):
    from utils.core.device import precision_for

    p = precision_for(capability, amp)
    assert p.name == expected
    assert p.scaler == (expected == "fp16") and p.enabled == (expected != "fp32")


def test_precision_on_this_machines_cpu_is_full():
    from utils.core.device import device_precision

    assert device_precision(torch.device("cpu")).name == "fp32"


def test_accumulation_micro_steps_skip_the_all_reduce(tmp_path):
    """Under DDP every micro-step but the updating one runs in no_sync (one process of gloo on the CPU)."""
    import contextlib

    import torch.distributed as dist

    from utils.train.engine import grad_sync

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
        with grad_sync(net, 2, update=False):
            assert net.require_backward_grad_sync is False
        with grad_sync(net, 2, update=True):
            assert net.require_backward_grad_sync is True
        assert isinstance(grad_sync(net, 1, update=False), contextlib.nullcontext)
    finally:
        dist.destroy_process_group()


def test_batch_kernels_get_text_progress_bars_where_ipywidgets_is_installed():
    """With ipywidgets installed, tqdm.auto would draw widgets that a runner's log cannot show: batch runs get text."""
    import subprocess
    import sys

    import ipywidgets  # noqa: F401 - the development requirements install it: the case this guards

    code = "from utils.core.progress import tqdm; print(tqdm.__module__)"
    for env, want in (({"ECG_BATCH": "1"}, "tqdm.std"), ({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, "tqdm.std")):
        done = subprocess.run([sys.executable, "-c", code], env={**_clean_env(), **env}, capture_output=True, text=True)
        assert done.stdout.strip() == want, done.stderr


def _clean_env():
    import os

    return {k: v for k, v in os.environ.items() if k not in ("ECG_BATCH", "KAGGLE_KERNEL_RUN_TYPE")}
