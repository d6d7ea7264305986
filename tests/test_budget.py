"""The budget said before a run: disk per artefact from measured samples, compute from counted FLOPs, and a refusal
that names what would fit."""
from __future__ import annotations

import pytest

from tests.conftest import make_notebook
from utils.core.paths import resolve_paths
from utils.pipeline.budget import BudgetError, check_disk, estimate_compute, estimate_disk, peak_bytes
from utils.core.config import resolve_config


def _cfg(tmp_path, **kw):
    return resolve_config("smoke", {"working_root": str(tmp_path), **kw})


def test_disk_estimate_counts_every_artefact_and_refuses_over_budget(tmp_path):
    cfg = _cfg(tmp_path)
    disk = estimate_disk(cfg, resolve_paths(cfg)).set_index("what")
    assert disk.loc["synthetic scans", "count"] == cfg["synth_scan_train"]
    assert disk.loc["synthetic photos", "count"] == cfg["synth_photo_train"] + cfg["synth_photo_test"]
    assert {"cache raw", "cache roi_clahe", "cache seg_rect"} <= set(disk.index)  # one per strategy
    assert disk.loc["Stage II best.pt per fold", "count"] == cfg["n_folds"]
    assert (disk["bytes_each"] > 0).all() and not disk.loc["last.pt while a fit runs", "kept"]
    table = disk.reset_index()
    assert peak_bytes(table) > table.loc[table["kept"], "bytes"].sum()
    check_disk({**cfg, "disk_budget_gb": 1.0}, table)  # fits
    with pytest.raises(BudgetError, match=r"would write about 0\.0\d GB, over disk_budget_gb=0\.01: set "
                                          r"synth_scan_train=0 \(or fewer strategies"):
        check_disk({**cfg, "disk_budget_gb": 0.01}, table)
    more = _cfg(tmp_path, synth_scan_train=400)
    big = estimate_disk(more, resolve_paths(more))
    with pytest.raises(BudgetError) as err:
        check_disk({**more, "disk_budget_gb": 0.09}, big)
    fits = int(str(err.value).split("synth_scan_train=")[1].split(" ")[0])
    assert 0 < fits < 400
    smaller = _cfg(tmp_path, synth_scan_train=fits)
    check_disk({**smaller, "disk_budget_gb": 0.09}, estimate_disk(smaller, resolve_paths(smaller)))  # and it does


def test_compute_estimate_from_counted_flops():
    cfg = resolve_config("smoke")
    t4 = estimate_compute(cfg, "Tesla T4", 2).set_index("what")
    assert t4.loc["Stage I", "training_images"] == int(cfg["synth_scan_train"] * (0.9 + 0.1 / 3) * cfg["stage1_epochs"])
    flops = 3 * t4.loc["Stage I", "gflop_per_image_forward"] * 1e9 * t4.loc["Stage I", "training_images"]
    assert t4.loc["Stage I", "pflop"] == pytest.approx(flops / 1e15, rel=0.02)
    assert t4.loc["Stage I", "hours"] > 0 and "assumed 30% of peak" in t4.loc["Stage I", "basis"]
    assert estimate_compute(cfg, None).loc[0, "hours"] is None


def test_the_runner_refuses_before_any_step(tmp_path):
    from utils.pipeline.runner import run_pipeline

    nbs = tmp_path / "nbs"
    make_notebook(nbs / "00_first.ipynb", [("code", 'profile: str = "kaggle"  # p\n', ["parameters"]),
                                           ("code", "raise SystemExit('must not run')", [])])
    with pytest.raises(BudgetError, match="over disk_budget_gb"):
        run_pipeline("smoke", overrides={"working_root": str(tmp_path / "w"), "disk_budget_gb": 0.001},
                     notebook_dir=nbs)
    assert not (tmp_path / "w" / "outputs" / "smoke").exists()  # nothing was started


def test_achieved_share_is_read_for_the_configured_backbone_at_fp16_channels_last(tmp_path):
    import json

    from utils.pipeline.budget import ACHIEVED, achieved_fraction

    def check(root, name, shares):
        rows = [{"backbone": b, "precision": p, "channels_last": cl, "share_of_peak": v, "size": f"{8 * k}x8"}
                for k, (b, p, cl, v) in enumerate(shares)]
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps({"device": {"name": "GPU X"}, "training": rows}))

    mine, shipped = tmp_path / "outputs", tmp_path / "docs"
    check(shipped, "2026-01-01", [("big", "fp16", True, 0.10), ("big", "fp16", True, 0.20), ("big", "fp32", True, 0.9),
                                  ("big", "fp16", False, 0.9), ("big", "bf16", True, 0.9), ("small", "fp16", True, 0.01)])
    share, basis = achieved_fraction("big", "0x0", (mine, shipped))  # a size not measured: the median
    assert share == pytest.approx(0.15) and "15.0% of the fp16 peak" in basis and "GPU X" in basis
    assert achieved_fraction("big", "8x8", (mine, shipped))[0] == pytest.approx(0.20)  # the size measured
    assert achieved_fraction("small", "", (mine, shipped))[0] == pytest.approx(0.01)
    assert achieved_fraction("other", "", (mine, shipped)) == (ACHIEVED, f"assumed {ACHIEVED:.0%} of peak until make "
                                                                       "gpu-check measures it")
    check(mine, "2025-06-01", [("big", "fp16", True, 0.4)])  # this machine's own check comes first, even if older
    assert achieved_fraction("big", "", (mine, shipped))[0] == pytest.approx(0.4)


def test_validation_runs_on_one_gpu_and_training_on_all():
    from utils.pipeline.budget import passes

    cfg = resolve_config("smoke", {"stage1_epochs": 10})
    one, two = (estimate_compute(cfg, "Tesla T4", g).set_index("what").loc["Stage I", "hours"] for g in (1, 2))
    train, val = passes(cfg)["Stage I"]
    assert train == int(cfg["synth_scan_train"] * 0.9 * 10) and val == int(cfg["synth_scan_train"] * 0.1 * 10)
    assert two / one == pytest.approx((3 * train / 2 + val) / (3 * train + val), rel=1e-3)  # not a half


def test_the_competition_photos_are_counted_from_what_is_attached(tmp_path):
    import cv2
    import numpy as np
    import pandas as pd

    from utils.core.paths import Paths
    from utils.pipeline.budget import COMPETITION_PHOTOS, competition_photos

    comp = tmp_path / "input" / "competitions" / "bhf"
    (comp / "train").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(comp / "train" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    pd.DataFrame({"id": ["3", "4"], "MI": [0.5, 0.5]}).to_csv(comp / "sample_submission.csv", index=False)
    cfg = resolve_config("kaggle", {"target": "competition"})
    paths = Paths(tmp_path / "input", tmp_path, tmp_path / "out", tmp_path / "data")
    assert competition_photos(cfg, paths) == (3, f"counted in {comp}")
    assert competition_photos(cfg, Paths(None, tmp_path, tmp_path, tmp_path))[0] == COMPETITION_PHOTOS


def test_budget_only_prints_and_creates_nothing(tmp_path, capsys):
    from utils.pipeline.runner import run_pipeline

    assert run_pipeline("smoke", overrides={"working_root": str(tmp_path / "w"), "disk_budget_gb": 0.001},
                        budget_only=True) is None
    out = capsys.readouterr().out
    assert "creates nothing" in out and "OVER THE DISK BUDGET" in out and "CPU steps (estimate" in out
    assert not (tmp_path / "w").exists()


def test_gpu_train_measurements_come_first_and_answer_the_t4_question(tmp_path):
    import json

    from utils.pipeline.budget import achieved_fraction, t4_memory_answer

    train_root, check_root = tmp_path / "gpu-train", tmp_path / "gpu-check"
    for root, name, results in (
            (check_root, "2026-12-01", {"training": [{"backbone": "big", "precision": "fp16", "channels_last": True,
                                                      "share_of_peak": 0.12, "size": "8x8"}]}),
            (train_root, "2026-11-01", {"efficiency": [
                {"setting": "eager", "backbone": "big", "precision": "fp16", "channels_last": True,
                 "share_of_peak": 0.10, "size": "8x8"},
                {"setting": "+ fused AdamW", "backbone": "big", "precision": "fp16", "channels_last": True,
                 "share_of_peak": 0.27, "size": "8x8", "as_trained": True}],
                "t4_memory": {"backbone": "big", "size": "8x8", "batch": 16, "fits": True, "peak_memory_gib": 9.5,
                              "cap_gib": 14.0}})):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps({"device": {"name": "GPU Y"}, **results}))
    share, basis = achieved_fraction("big", "8x8", (train_root, check_root))
    assert share == pytest.approx(0.27) and "gpu-train 2026-11-01" in basis  # the row a fit runs, not the eager one
    cfg = {"backbone": "big", "image_height": 8, "image_width": 8, "batch_size": 16}
    said = t4_memory_answer(cfg, (train_root, check_root))
    assert "fits, peak 9.5 GiB of a 14.0 GiB cap" in said and "GPU Y" in said
    assert "not measured" in t4_memory_answer({**cfg, "batch_size": 32}, (train_root, check_root))


def test_the_budget_says_the_sessions_and_counts_the_competition_it_has_not_seen(tmp_path):
    """Without the competition attached, its pictures are still cached by step 02: the challenge's count is assumed;
    the sessions needed are the CPU and training hours over session_hours."""
    import pandas as pd

    from utils.core.config import resolve_config
    from utils.core.paths import resolve_paths
    from utils.pipeline.budget import COMPETITION_PHOTOS, COMPETITION_TEST, external_images, sessions_needed

    cfg = resolve_config("smoke", {"target": "competition", "input_root": str(tmp_path), "session_hours": 5.0})
    assert external_images(cfg, resolve_paths(cfg)) == COMPETITION_PHOTOS + COMPETITION_TEST
    cpu, compute = pd.DataFrame({"hours": [0.5, 1.0]}), pd.DataFrame({"hours": [3.0, 8.0]})
    assert sessions_needed(cfg, cpu, compute).startswith("sessions of 5 h: at least 3 (12.5 h of CPU steps and training")
    assert "not counted" in sessions_needed(cfg, cpu, pd.DataFrame({"hours": [None, None]}))


def test_what_is_drawn_outside_the_output_is_said_apart_from_what_a_session_saves(tmp_path):
    """Kaggle's layout: data_root under /kaggle/temp, so the sets drawn there are not in the saved output's peak."""
    from utils.pipeline.budget import disk_needs, drawn_bytes

    outside = _cfg(tmp_path, working_root=str(tmp_path / "working"), data_root=str(tmp_path / "temp" / "data"))
    paths = resolve_paths(outside)
    disk = estimate_disk(outside, paths)
    drawn = disk[~disk["saved"]]
    assert {"synthetic scans", "synthetic photos"} <= set(drawn["what"]) and drawn_bytes(disk) > 0
    assert "cache roi_clahe" not in set(drawn["what"])  # what training reads stays with the run
    inside = _cfg(tmp_path)
    whole = estimate_disk(inside, resolve_paths(inside))
    assert whole["saved"].all() and drawn_bytes(whole) == 0
    assert peak_bytes(disk) == pytest.approx(peak_bytes(whole) - drawn_bytes(disk), rel=1e-6)
    assert disk_needs(disk, paths) == {paths.working_root: peak_bytes(disk), paths.data_root: drawn_bytes(disk)}
