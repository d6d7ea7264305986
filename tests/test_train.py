"""The training engine: loss, schedule, early stopping, learning, kill-and-resume, errors."""
import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import utils.train.engine as train_mod
from utils.core.config import DEFAULTS
from utils.core.labels import LABELS as THE_LABELS
from utils.core.metrics import auroc_table
from utils.train.augment import CatmullRomShadow, train_transform
from utils.train.engine import fit
from utils.train.settings import TrainSettings
from utils.train.models import check_backbone, create_model
from utils.train.objective import EarlyStopping, cosine_lambda, masked_bce, pos_weight

LABELS = list(THE_LABELS)  # a list: pandas reads a tuple as one key


def test_masked_bce_ignores_unknown_labels_and_weights_positives():
    logits = torch.tensor([[0.0, 2.0, -1.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    w = torch.tensor([4.0, 1.0, 1.0, 1.0, 1.0])
    expected = (4 * math.log(2) + math.log(1 + math.exp(2))) / 2  # positive MI weighted 4x; AF negative
    assert masked_bce(logits, target, mask, w).item() == pytest.approx(expected, rel=1e-6)
    changed = logits.clone()
    changed[0, 2:] = 50.0  # unknown labels can be anything
    assert masked_bce(changed, target, mask, w).item() == pytest.approx(expected, rel=1e-6)


def test_pos_weight_is_inverse_prevalence_among_known():
    y = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]], float)
    m = np.ones_like(y)
    m[3, 0] = 0  # MI unknown on the last row: prevalence 1/3, not 1/4
    np.testing.assert_allclose(pos_weight(y, m)[:2], [3.0, 4.0])


def test_schedule_warms_up_then_follows_the_cosine():
    f = cosine_lambda(total_steps=110, warmup_steps=10, num_cycles=0.5)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    g = cosine_lambda(100, 0, num_cycles=1.0)  # a full cycle comes back up
    assert g(50) == pytest.approx(0.0) and g(100) == pytest.approx(1.0)


def test_early_stopping():
    es = EarlyStopping(patience=2)
    assert es.step(0.6) == (True, False) and es.step(0.59) == (False, False) and es.step(0.61) == (True, False)
    assert es.step(0.5) == (False, False) and es.step(float("nan")) == (False, True)


def test_auroc_table_leaves_out_single_class_labels():
    y = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1], [1, 0, 0, 0, 1], [0, 0, 1, 1, 0]], float)
    p = y * 0.8 + 0.1
    with pytest.warns(UserWarning, match="AF: only one class"):
        macro, per = auroc_table(y, p)
    assert math.isnan(per["AF"]) and macro == pytest.approx(1.0)


def test_shadow_transform_keeps_shape_and_darkens():
    img = np.full((120, 160, 3), 200, np.uint8)
    out = CatmullRomShadow(p=1.0)(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out < img).any() and out.max() <= 200
    t = train_transform(seed=3)
    assert not any(type(x).__name__ in ("HorizontalFlip", "VerticalFlip") for x in t.transforms)


def test_unknown_backbone_and_missing_weights_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"unknown backbone 'convnext_bse'.*did you mean convnext_base"):
        check_backbone("convnext_bse")
    with pytest.raises(FileNotFoundError, match=r"nope.safetensors not found \(set by 'backbone_weights'\)"):
        create_model("test_convnext", weights=str(tmp_path / "nope.safetensors"))
    empty = tmp_path / "dataset"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .safetensors/.bin/.pth file in"):
        create_model("test_convnext", weights=str(empty))


def test_local_weights_are_loaded_and_scratch_is_announced(tmp_path, capsys):
    from safetensors.torch import save_file

    donor, _ = create_model("test_convnext", num_classes=1000)
    save_file(donor.state_dict(), str(tmp_path / "model.safetensors"))
    model, source = create_model("test_convnext", weights=str(tmp_path))
    assert source.startswith("file:") and source.endswith("model.safetensors")
    torch.testing.assert_close(model.stem[0].weight, donor.stem[0].weight)
    _, source = create_model("test_convnext")
    assert source == "scratch" and "NO PRETRAINED WEIGHTS" in capsys.readouterr().out


def _tiny_table(tmp_path, n=16, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        y = rng.integers(0, 2, 5)
        img = np.full((48, 64, 3), 255, np.uint8)
        for j in range(5):  # each label draws its own bar: learnable
            if y[j]:
                img[5 + 8 * j:10 + 8 * j, 8:56] = 0
        path = tmp_path / f"{seed}_{i}.png"
        cv2.imwrite(str(path), img)
        rows.append({"id": f"x{seed}_{i}", "cached": str(path), **dict(zip(LABELS, y.astype(float)))})
    df = pd.DataFrame(rows)
    df.loc[0, "AF"] = np.nan  # an unknown label
    return df


def _settings(**kw):
    base = dict(backbone="test_convnext", backbone_weights="none", hub=False, image_height=48, image_width=64, epochs=2,
                batch_size=4, accum_steps=1, lr=3e-3, warmup_epochs=0.0, patience=5, num_workers=0, device="cpu",
                amp=False, seed=7, input_channels="rgb", compile="off",
                threads=1)  # a fixed thread count: bit-identical weights do not depend on the load beside the test
    return TrainSettings.from_config(DEFAULTS, **{**base, **kw})


@pytest.mark.slow
def test_two_epochs_lower_the_loss(tmp_path):
    df = _tiny_table(tmp_path)
    result = fit(_settings(epochs=3, aug_strength=0.0), df, df, tmp_path / "out")
    h = pd.read_csv(tmp_path / "out" / "history.csv")
    assert len(h) == 3 and h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert {"lr", "macro_auroc", "auroc_MI", "train_images_per_s", "seconds"} <= set(h.columns)
    best = torch.load(tmp_path / "out" / "best.pt", weights_only=True)
    assert best["settings"]["backbone"] == "test_convnext" and best["weights_source"] == "scratch"
    assert result["epochs_run"] == 3


@pytest.mark.slow
def test_held_out_pictures_are_read_correctly_after_augmented_training(tmp_path):
    """Labels stay with their pictures through caching, augmentation and batching: unseen pictures are ranked right."""
    train, val = _tiny_table(tmp_path, 64, seed=1), _tiny_table(tmp_path, 32, seed=2)
    result = fit(_settings(epochs=6, batch_size=8, aug_strength=1.0), train, val, tmp_path / "out")
    assert result["best_macro_auroc"] > 0.85


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_weights(tmp_path, monkeypatch):
    df = _tiny_table(tmp_path)
    fit(_settings(), df, df, tmp_path / "whole")
    calls = {"n": 0}
    real = train_mod.auroc_table

    def dying(*a, **k):  # the session dies while validating epoch 2, after epoch 1's checkpoint
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "auroc_table", dying)
    with pytest.raises(KeyboardInterrupt):
        fit(_settings(), df, df, tmp_path / "killed")
    monkeypatch.setattr(train_mod, "auroc_table", real)
    assert len(pd.read_csv(tmp_path / "killed" / "history.csv")) == 1
    assert (tmp_path / "killed" / "last.pt").is_file()  # what the next session resumes from
    fit(_settings(), df, df, tmp_path / "killed")
    a = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "best.pt", weights_only=True)
    assert a["epoch"] == b["epoch"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    # a finished fit keeps best.pt only, and is not trained again
    assert not (tmp_path / "killed" / "last.pt").exists() and not (tmp_path / "whole" / "last.pt").exists()
    assert fit(_settings(), df, df, tmp_path / "killed")["epochs_run"] == 2
    with pytest.raises(ValueError, match="with other settings"):
        fit(_settings(lr=1e-3), df, df, tmp_path / "killed")


@pytest.mark.slow
def test_distributed_data_parallel_under_torchrun(tmp_path):
    """Two processes on the CPU (gloo): the path the Kaggle notebooks take on two T4s (nccl)."""
    import json
    import subprocess
    import sys
    from dataclasses import asdict

    from utils.core.paths import REPO_ROOT

    df = _tiny_table(tmp_path)
    df.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "s.json").write_text(json.dumps(asdict(_settings(epochs=2))))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "utils.train.engine",
           "--settings", str(tmp_path / "s.json"), "--train", str(tmp_path / "rows.csv"),
           "--val", str(tmp_path / "rows.csv"), "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert list(history["epoch"]) == [1, 2] and history["macro_auroc"].notna().all()
    assert json.loads((tmp_path / "out" / "result.json").read_text())["epochs_run"] == 2
    assert (tmp_path / "out" / "best.pt").is_file()


@pytest.mark.slow
def test_a_session_limit_pauses_at_an_epoch_boundary_and_the_next_session_resumes(tmp_path):
    import time

    from utils.core.session import SessionPaused

    df = _tiny_table(tmp_path)
    with pytest.raises(SessionPaused, match="paused: continue in a new session.*before epoch 1"):
        fit(_settings(), df, df, tmp_path / "out", limit=time.time() - 1)
    assert (tmp_path / "out" / "paused.txt").is_file() and not (tmp_path / "out" / "history.csv").exists()
    result = fit(_settings(), df, df, tmp_path / "out", limit=time.time() + 3600)  # the next session
    assert result["epochs_run"] == 2 and not (tmp_path / "out" / "paused.txt").exists()


def test_training_settings_come_from_the_configuration_alone():
    from dataclasses import MISSING, fields

    from utils.train.settings import CONFIG_NAMES, STAGE_FIELDS

    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(TrainSettings)), \
        "TrainSettings keeps no defaults of its own"
    cfg = {**DEFAULTS, "lr": 0.0123, "torch_compile": "on", "backbone_hub": False, "num_workers": 3, "device": "cuda:1"}
    s = TrainSettings.from_config(cfg, epochs=4)
    assert (s.lr, s.compile, s.hub, s.num_workers, s.device, s.epochs, s.init_checkpoint) == \
        (0.0123, "on", False, 3, "auto", 4, "")
    for f in fields(TrainSettings):  # every other field is the configuration's value under its name
        if f.name not in STAGE_FIELDS + ("num_workers", "device"):
            assert getattr(s, f.name) == cfg[CONFIG_NAMES.get(f.name, f.name)], f.name
    with pytest.raises(TypeError, match="no field 'learning_rate'"):
        TrainSettings.from_config(cfg, epochs=1, learning_rate=0.1)
