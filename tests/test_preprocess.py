"""Step 02: crop, CLAHE, rectification, fallbacks, SAM without a checkpoint, the cache and its records."""
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.core.config import resolve_config
from utils.core.labels import LABELS
from utils.core.packs import read_picture
from utils.preprocess.cache import PrepSettings, build_cache, prepare, safe_name
from utils.preprocess.roi import (
    apply_clahe,
    box_iou,
    classical_detect,
    crop_with_margin,
    order_corners,
    quad_is_plausible,
    rectify,
)
from utils.preprocess.sam import SamSegmenter, mask_to_quad
from utils.preprocess.step import parse_strategies, seg_method


def _photo(quad=((300, 200), (900, 240), (880, 700), (320, 660)), size=(900, 1200)):
    """A white sheet with dark lines on a brown table, at a known quadrilateral."""
    img = np.zeros((*size, 3), np.uint8)
    img[:] = (40, 70, 110)
    cv2.fillPoly(img, [np.array(quad, np.int32)], (245, 245, 245))
    for k in range(5):  # 'traces' inside the sheet
        y = 300 + 80 * k
        cv2.line(img, (400, y), (800, y + 20), (20, 20, 20), 2)
    return img, np.array(quad, float)


def test_every_strategy_records_the_region_it_reads():
    """`window` is what the model reads (predict's roi_box): the whole picture raw, the sheet with its margin, the
    rectified sheet's bounding box, the traces' region; the sheet's box stays apart."""
    img, quad = _photo()
    h, w = img.shape[:2]
    raw = prepare(img, PrepSettings(strategy="raw", long_side=256))[1]
    assert raw["window"] == [0, 0, w, h]
    sheet = prepare(img, PrepSettings(strategy="roi_clahe", long_side=256))[1]
    x0, y0, x1, y1 = sheet["box"]
    assert sheet["window"][0] < x0 and sheet["window"][2] > x1  # the margin around the sheet
    rect = prepare(img, PrepSettings(strategy="seg_rect", long_side=256))[1]
    assert rect["homography"] and np.abs(np.array(rect["window"]) - [*quad.min(0), *quad.max(0)]).max() <= 8
    traces = prepare(img, PrepSettings(strategy="roi_clahe", crop_to="traces", long_side=256))[1]
    assert traces["window"][1] > traces["box"][1] + 50 and traces["window"][3] < traces["box"][3] - 30  # tighter


def test_crop_with_margin_is_clipped_and_sized():
    img = np.zeros((100, 200, 3), np.uint8)
    crop, win = crop_with_margin(img, [10, 10, 110, 60], 0.1)
    assert win == [0, 5, 120, 65] and crop.shape == (60, 120, 3)
    with pytest.raises(ValueError, match="empty"):
        crop_with_margin(img, [150, 50, 150.5, 50.5], 0.0)


def test_clahe_raises_local_contrast_and_keeps_shape():
    rng = np.random.default_rng(0)
    img = (100 + rng.integers(0, 20, (128, 128, 3))).astype(np.uint8)
    out = apply_clahe(img, 3.0, 8)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).std() > 1.5 * cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).std()


def test_classical_finder_locates_the_sheet():
    img, quad = _photo()
    found = classical_detect(img)
    truth = [quad[:, 0].min(), quad[:, 1].min(), quad[:, 0].max(), quad[:, 1].max()]
    assert box_iou(found["box"], truth) > 0.9 and found["confidence"] > 0.8
    assert np.abs(np.array(found["corners"]) - order_corners(quad)).max() < 15


def test_rectification_of_a_known_quadrilateral():
    img, quad = _photo()
    marker = (quad[0] * 0.75 + quad[2] * 0.25).astype(int)  # a point a quarter of the way along the diagonal
    cv2.circle(img, tuple(int(v) for v in marker), 6, (0, 0, 255), -1)
    out, hom = rectify(img, quad)
    h, w = out.shape[:2]
    assert abs(w - 580) < 25 and abs(h - 460) < 25
    assert out[h // 2, w // 2].mean() > 200  # the middle is paper, not table
    red = np.argwhere((out[..., 2] > 200) & (out[..., 0] < 80))
    cy, cx = red.mean(0)
    assert abs(cx / w - 0.25) < 0.05 and abs(cy / h - 0.25) < 0.05
    mapped = cv2.perspectiveTransform(quad.reshape(-1, 1, 2).astype(np.float32), hom).reshape(-1, 2)
    np.testing.assert_allclose(mapped, [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], atol=1e-3)


def test_roi_clahe_crops_to_the_sheet():
    img, quad = _photo()
    out, rec = prepare(img, PrepSettings(strategy="roi_clahe", long_side=400))
    assert rec["method"] == "classical" and rec["fallback"] == "" and max(out.shape[:2]) == 400
    x0, y0, x1, y1 = rec["window"]
    assert x0 <= 300 and y0 <= 200 and x1 >= 900 and y1 >= 700 and x1 - x0 < 700


def test_no_sheet_falls_back_to_the_whole_picture_and_says_why():
    rng = np.random.default_rng(1)
    clutter = rng.integers(10, 60, (600, 800, 3), dtype=np.uint8)  # a dark cloth with a few bright specks
    for x, y in rng.integers(20, 580, (6, 2)):
        cv2.circle(clutter, (int(x), int(y)), 6, (250, 250, 250), -1)
    out, rec = prepare(clutter, PrepSettings(strategy="roi_clahe", long_side=320))
    assert rec["fallback"] == "raw" and rec["applied"] == "raw" and "classical" in rec["reason"]
    assert out.shape[1] == 320


def test_segmentation_that_cuts_the_sheet_falls_back_to_roi_clahe():
    ok, why = quad_is_plausible([[0, 0], [50, 0], [50, 50], [0, 50]], [0, 0, 100, 100], 0.6)
    assert not ok and "covers 25%" in why

    class HalfSheet:  # a segmenter that mistakes a crease for the sheet's edge (the paper's Figure 6)
        def corners(self, img, box):
            x0, y0, x1, y1 = box
            return [[x0, y0], [(x0 + x1) / 2, y0], [(x0 + x1) / 2, y1], [x0, y1]]

    img, _ = _photo()
    out, rec = prepare(img, PrepSettings(strategy="seg_rect", long_side=300), segmenter=HalfSheet())
    assert rec["applied"] == "roi_clahe" and rec["fallback"] == "roi_clahe" and "likely cut" in rec["reason"]
    out, rec = prepare(img, PrepSettings(strategy="seg_rect", long_side=300))
    assert rec["applied"] == "seg_rect" and rec["homography"] is not None


def test_sam_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a SAM checkpoint: set sam_checkpoint"):
        SamSegmenter("")
    with pytest.raises(FileNotFoundError, match=r"missing.pth not found \(set by 'sam_checkpoint'\)"):
        SamSegmenter(str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="seg_method 'sam' needs sam_checkpoint"):
        seg_method(resolve_config("smoke", {"seg_method": "sam"}))
    assert seg_method(resolve_config("smoke", {"seg_method": "auto"})) == "classical"
    mask = np.zeros((100, 100), np.uint8)
    cv2.fillPoly(mask, [np.array([[10, 10], [90, 15], [85, 80], [12, 85]])], 255)
    assert np.abs(np.array(mask_to_quad(mask)) - [[10, 10], [90, 15], [85, 80], [12, 85]]).max() <= 2


def test_the_cache_is_packed_into_shards_and_a_kill_before_the_records_loses_nothing(tmp_path, monkeypatch):
    """Loose pictures go into shards of PACK_SIZE once prepared; a shard written but not yet in the records (a kill
    between the two) is removed and its pictures packed again; training reads packed pictures as loose ones."""
    import shutil

    from utils.preprocess import cache as cache_module
    from utils.train.dataset import CachedImages, ModelInput

    monkeypatch.setattr(cache_module, "PACK_SIZE", 2)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(7):
        paths.append(tmp_path / f"p{k}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (40 + k, 60, 3), dtype=np.uint8))
    items = pd.DataFrame({"id": [f"x:{k}" for k in range(5)], "image": [str(p) for p in paths[:5]]})
    s, out = PrepSettings(strategy="raw", long_side=64), tmp_path / "cache"
    table = build_cache(items, s, out, workers=1, progress=False)
    assert sorted(p.name for p in out.glob("pack-*")) == ["pack-000.zip", "pack-001.zip", "pack-002.zip"]
    assert not list(out.rglob("*.jpg")) and table["cached"].str.contains("::").all()
    heights = [read_picture(ref).shape[0] for ref in table["cached"]]
    assert heights == [round((40 + k) * 64 / 60) for k in range(5)]
    shutil.copy(out / "pack-000.zip", out / "pack-009.zip")  # a shard no record points at
    more = pd.DataFrame({"id": [f"x:{k}" for k in range(7)], "image": [str(p) for p in paths]})
    table = build_cache(more, s, out, workers=1, progress=False)
    assert sorted(p.name for p in out.glob("pack-*")) == [f"pack-00{k}.zip" for k in range(4)]  # the orphan gone
    assert table["cached"].iloc[5].startswith(str(out / "pack-003.zip"))
    data = CachedImages(table.assign(**{k: 0.0 for k in LABELS}), ModelInput((32, 32), [0.5] * 3, [0.5] * 3))
    assert [tuple(data[i][0].shape) for i in (0, 6)] == [(3, 32, 32), (3, 32, 32)]
    (out / "pack-001.zip").write_bytes(b"PK\x03\x04 damaged")  # a damaged shard: named, then prepared again
    with pytest.raises(ValueError, match=r"cached image .*pack-001\.zip::.* cannot be read; rebuild the cache"):
        CachedImages(table.assign(**{k: 0.0 for k in LABELS}), ModelInput((32, 32), [0.5] * 3, [0.5] * 3))[2]
    with pytest.raises(OSError, match=r"pack-001\.zip is not a readable shard"):
        read_picture(table["cached"].iloc[2])
    again = build_cache(more, s, out, workers=1, progress=False)
    assert again["ok"].all() and not (out / "pack-001.zip").exists()  # its two pictures prepared and packed anew
    assert [read_picture(ref).shape[0] for ref in again["cached"].iloc[:5]] == heights


def test_cache_records_corrupt_pictures_and_resumes(tmp_path):
    img, _ = _photo()
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), img)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items = pd.DataFrame({"id": ["competition:good", "competition:bad"], "image": [str(good), str(bad)]})
    s = PrepSettings(strategy="roi_clahe", long_side=256)
    table = build_cache(items, s, tmp_path / "cache", workers=1, progress=False)
    assert table.set_index("id").loc["competition:good", "ok"]
    assert "cannot decode" in table.set_index("id").loc["competition:bad", "error"]
    ref = table.set_index("id").loc["competition:good", "cached"]
    assert ref == f"{tmp_path / 'cache' / 'pack-000.zip'}::{safe_name('competition:good')}.jpg"
    assert max(read_picture(ref).shape[:2]) == 256 and not list((tmp_path / "cache").rglob("*.jpg"))  # packed
    shard = tmp_path / "cache" / "pack-000.zip"
    mtime = shard.stat().st_mtime_ns
    again = build_cache(items, s, tmp_path / "cache", workers=1, progress=False)
    assert shard.stat().st_mtime_ns == mtime and len(again) == 2  # done once, the failure tried again
    assert sorted(p.name for p in (tmp_path / "cache").glob("pack-*")) == ["pack-000.zip"]
    with pytest.raises(ValueError, match="other preprocessing settings"):
        build_cache(items, PrepSettings(strategy="roi_clahe", long_side=300), tmp_path / "cache", workers=1)


def test_strategy_names_are_checked():
    assert parse_strategies("raw, seg_rect") == ["raw", "seg_rect"]
    with pytest.raises(ValueError, match="choose from"):
        parse_strategies("roi,raw")
    with pytest.raises(ValueError, match="strategy 'crop'"):
        PrepSettings(strategy="crop")
    assert safe_name("a:b/c") != safe_name("a_b_c") and "/" not in safe_name("x/y")


def test_models_are_loaded_per_settings_never_reused_across_them(tmp_path):
    from utils.preprocess.cache import load_models

    assert load_models(PrepSettings()) == (None, None)
    # a later strategy in the same process asks for SAM: it must get its own (here: a clear error), not the first's
    with pytest.raises(FileNotFoundError, match=r"SAM checkpoint .*nope\.pth not found"):
        load_models(PrepSettings(strategy="seg_rect", seg_method="sam", sam_checkpoint=str(tmp_path / "nope.pth")))
    with pytest.raises(FileNotFoundError, match=r"YOLO weights .*missing\.pt not found"):
        load_models(PrepSettings(yolo_weights=str(tmp_path / "missing.pt"), config_dir=str(tmp_path / "yolo")))


def test_detector_trains_on_an_image_without_polars(tmp_path):
    """Ultralytics reads results.csv with polars at every checkpoint; where polars is missing (a GPU image) the
    detector still trains, and its checkpoint holds the same columns polars reads."""
    import subprocess
    import sys

    import polars as pl
    import torch

    from utils.core.paths import REPO_ROOT

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for k in range(n):
            img, _ = _photo(size=(96, 128), quad=((30, 20), (100, 24), (98, 80), (32, 76)))
            cv2.imwrite(str(tmp_path / "images" / split / f"{k}.jpg"), np.clip(img + rng.integers(0, 20, img.shape),
                                                                              0, 255).astype(np.uint8))
            (tmp_path / "labels" / split / f"{k}.txt").write_text("0 0.5 0.5 0.55 0.6\n")
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames:\n  0: paper\n")
    code = ("import sys; sys.modules['polars'] = None\n"
            "from utils.preprocess.detector import train_detector\n"
            f"print(train_detector({str(tmp_path / 'data.yaml')!r}, {str(tmp_path / 'run')!r}, epochs=2, imgsz=64, "
            "batch=2))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    best = r.stdout.strip().splitlines()[-1]
    assert best.endswith("best.pt")
    results = torch.load(best, weights_only=False)["train_results"]
    expected = pl.read_csv((tmp_path / "run" / "detector" / "results.csv").read_bytes()).to_dict(as_series=False)
    assert results["epoch"] == [1, 2]
    assert results.keys() == expected.keys()
    assert all(np.allclose(results[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_models_run_once_in_the_main_process_and_workers_replay_them_identically(tmp_path):
    """The GPU path of the cache (models in the main process, in batches; workers replay what they found), run here
    on the CPU: every record and every cached picture is the same as when each worker runs its own models."""
    from ultralytics import YOLO

    from utils.preprocess.cache import PrepSettings, _work, models_on_device
    from utils.preprocess.detector import prepare_offline
    from utils.synth.generate import SynthSettings, make_sample

    prepare_offline(tmp_path / "cfg")
    weights = tmp_path / "det.pt"
    YOLO("yolov8n.yaml").save(str(weights))
    pictures = []
    for i in range(3):
        data, _, _ = make_sample(SynthSettings(style="photo", page_width=440, page_height=340, photo_max_side=560), i)
        (tmp_path / f"{i}.jpg").write_bytes(data)
        pictures.append((f"p{i}", str(tmp_path / f"{i}.jpg")))
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    pictures.append(("broken", str(tmp_path / "broken.jpg")))
    s = PrepSettings(strategy="roi_clahe", long_side=256, yolo_weights=str(weights), yolo_imgsz=128, yolo_conf=0.0,
                     config_dir=str(tmp_path / "cfg"))
    todo = [(s, i, p, str(tmp_path / "a"), None) for i, p in pictures]
    found = models_on_device(todo, s, "cpu", batch=2, progress=False)
    assert sorted(found) == ["p0", "p1", "p2"] and all(f["det"]["method"] == "yolo" for f in found.values())
    own = [_work(t) for t in todo]
    replayed = [_work((s, i, p, str(tmp_path / "b"), found.get(i))) for i, p in pictures]
    for a, b in zip(own, replayed):
        assert {k: v for k, v in a.items() if k != "cached"} == {k: v for k, v in b.items() if k != "cached"}
        if a["ok"]:
            assert Path(a["cached"]).read_bytes() == Path(b["cached"]).read_bytes()
    assert not own[-1]["ok"] and not replayed[-1]["ok"] and replayed[-1]["error"]
