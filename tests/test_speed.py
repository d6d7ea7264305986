"""How fast a fit runs without changing what it learns: persistent loader workers, torch.compile and its fallback,
speed-only settings on resume."""
import warnings

import pandas as pd
import pytest
import torch

from tests.test_train import _settings, _tiny_table
from utils.train.augment import train_transform
from utils.train.dataset import CachedImages, ModelInput
from utils.train.engine import fit
from utils.train.loader import make_loader
from utils.train.settings import same_fit
from utils.train.speed import compile_wanted


def _batches(ds, workers: int, epochs=(0, 1)):
    loader = make_loader(ds, _settings(num_workers=workers, batch_size=4), shuffle=True)
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out.append(torch.cat([x for x, *_ in loader]))
    return out, loader


def test_persistent_workers_draw_each_epochs_augmentation(tmp_path):
    """Workers made once keep the dataset's copy: the epoch reaches them in the sampler's keys, so two workers give
    the very batches the main process gives, and epoch 1 is not epoch 0 again."""
    df = _tiny_table(tmp_path, 12)
    ds = CachedImages(df, ModelInput((48, 64), (0.5,) * 3, (0.25,) * 3), train_transform(1.0), seed=3)
    here, _ = _batches(ds, 0)
    there, loader = _batches(ds, 2)
    assert loader.persistent_workers and loader.prefetch_factor == 4
    for a, b in zip(here, there):
        torch.testing.assert_close(a, b)
    assert not torch.equal(here[0], here[1])  # another order and another augmentation


def test_speed_only_settings_do_not_make_another_fit():
    now = {"backbone": "b", "lr": 1e-3, "compile": "on", "cudnn_benchmark": True, "num_workers": 4, "threads": 0}
    assert same_fit({**now, "compile": "off", "num_workers": 0, "threads": 2}, now)
    assert same_fit({"backbone": "b", "lr": 1e-3}, now)  # written before the speed keys existed
    assert not same_fit({**now, "lr": 1e-4}, now)
    with pytest.raises(ValueError, match="torch_compile must be one of"):
        compile_wanted("yes", torch.device("cpu"))
    assert compile_wanted("auto", torch.device("cuda")) and not compile_wanted("auto", torch.device("cpu"))


@pytest.mark.slow
def test_compile_on_and_off_give_the_same_losses(tmp_path):
    df = _tiny_table(tmp_path, 8)
    s = dict(epochs=1, aug_strength=0.0, max_steps_per_epoch=2, drop_rate=0.0)  # compiled dropout draws its own masks
    fit(_settings(compile="off", **s), df, df, tmp_path / "eager")
    fit(_settings(compile="on", **s), df, df, tmp_path / "compiled")
    eager, compiled = (pd.read_csv(tmp_path / d / "history.csv").iloc[0] for d in ("eager", "compiled"))
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_a_compile_that_fails_warns_once_and_trains_without(tmp_path, monkeypatch):
    """A machine whose compiler is missing (inductor cannot build its kernels): one warning, the same fit eagerly."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("no-such-compiler",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)  # a kernel built earlier must not hide the failure
    df = _tiny_table(tmp_path, 8)
    s = dict(epochs=1, aug_strength=0.0, max_steps_per_epoch=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(_settings(compile="on", **s), df, df, tmp_path / "fallback")
    said = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert len(said) == 1 and "InvalidCxxCompiler" in said[0] and "torch_compile=off" in said[0]
    fit(_settings(compile="off", **s), df, df, tmp_path / "eager")
    fell, eager = (pd.read_csv(tmp_path / d / "history.csv").iloc[0] for d in ("fallback", "eager"))
    assert fell["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-5)


def test_the_stage_benchmark_times_each_stage_of_a_prediction(tmp_path):
    """Every stage of predict's pass timed on its own, on real pictures through the real code (untrained weights:
    speed only); the summary's shares add up to the whole."""
    from utils.bench.stages import pictures, summary, time_stages
    from utils.core.config import resolve_config

    cfg = resolve_config("smoke")
    paths = pictures(cfg, 2, None, tmp_path)
    table = time_stages(cfg, paths)
    stages = ["decode", "gate (page reader)", "turn (traces)", "crop (step 02's preparation)", "digitise",
              "trace segmenter's mask", f"image model ({cfg['n_folds']} folds)"]
    assert list(table.columns) == ["picture", "pixels", *stages] and len(table) == 2
    assert (table[stages] > 0).all().all()
    said = summary(table).set_index("stage")
    assert said.loc["all stages", "mean_s"] == pytest.approx(table[stages].sum(axis=1).mean(), abs=1e-3)
    assert sum(float(v.rstrip("%")) for v in said["share"].iloc[:-1]) == pytest.approx(100, abs=3)


def test_the_stage_benchmark_times_the_whole_pass_with_each_allocator_and_in_workers(tmp_path):
    """The whole pass through the real Predictor.read on a package of untrained profile models: with glibc's default
    allocator (a child process), here, and in a worker per core; the first row is the baseline of the speed-ups."""
    from utils.bench.stages import pictures, time_pass, untrained_package
    from utils.core.config import resolve_config
    from utils.core.pool import usable_cores
    from utils.ensemble.predictor import POOL_FROM

    cfg = resolve_config("smoke")
    paths = pictures(cfg, POOL_FROM, None, tmp_path)
    table = time_pass(untrained_package(cfg, tmp_path), paths)
    assert list(table["whole pass"]) == ["prepared here, glibc's default allocator", "prepared here",
                                         f"a worker per core ({usable_cores()})"][:3 if usable_cores() > 1 else 2]
    assert (table[["s_per_picture", "wall_s", "own_s_median"]] > 0).all().all()
    assert table["speed-up"].iloc[0] == 1.0
    ratio = table["s_per_picture"].iloc[0] / table["s_per_picture"]
    assert table["speed-up"].tolist() == pytest.approx(ratio.round(2).tolist(), abs=0.011)
