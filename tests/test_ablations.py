"""Step 07: the grid's plan, its statistics on known answers, the paired artefact sweeps, and the notebook at smoke scale."""
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.ablations import grid as ab
from utils.ablations import recorded, results
from utils.ablations import robustness as rb
from utils.core.labels import LABELS
from utils.core.paths import resolve_paths
from utils.core.config import ConfigError, resolve_config
from utils.synth.generate import SynthSettings, make_sample


def _cfg(tmp_path, profile="smoke", **kw):
    return resolve_config(profile, {"working_root": str(tmp_path), **kw})


def test_every_scale_plans_the_three_tables_around_one_baseline(tmp_path):
    for scale, profile in (("smoke", "smoke"), ("cpu", "demo"), ("paper", "kaggle")):
        cfg = _cfg(tmp_path, profile, ablation_scale=scale)
        vs = {v.name: v for v in ab.variants(cfg)}
        base = ab.base_overrides(cfg)
        assert base["strategies"] == "raw,roi_clahe,seg_rect" and base["stage2_init"] == "stage1"
        assert {k: v for k, v in ab.SCALE_OVERRIDES[scale].items()} == {k: base[k] for k in ab.SCALE_OVERRIDES[scale]}
        backbones = {v.row: v.overrides["backbone"] for v in vs.values() if v.table == "backbone"}
        expected = ab.SCALE_BACKBONES[scale]
        assert backbones == {k: n for k, n in expected.items() if k != "ConvNeXt"}
        assert vs["baseline"].overrides["backbone"] == (expected["ConvNeXt"] or cfg["backbone"])
        # each non-baseline row changes exactly one thing against the baseline
        for v in vs.values():
            if v.name == "baseline" or v.table == "backbone":
                continue
            changed = {k for k, val in v.overrides.items() if vs["baseline"].overrides.get(k, base.get(k)) != val}
            assert len(changed) == 1, (v.name, changed)
        assert vs["stage2-alone"].steps == "04-05"
        assert {vs[f"stage1-{k}"].overrides["stage1_sources"] for k in ("real", "synthetic", "recorded", "simulated")} \
            == {"real", "synthetic", "recorded", "simulated"}


def test_grid_folder_follows_the_settings_that_matter(tmp_path):
    a = ab.Grid(_cfg(tmp_path), resolve_paths(_cfg(tmp_path)))
    b = ab.Grid(_cfg(tmp_path, robustness_images=20, num_workers=1), resolve_paths(_cfg(tmp_path)))
    c = ab.Grid(_cfg(tmp_path, stage2_epochs=3), resolve_paths(_cfg(tmp_path)))
    assert a.root == b.root != c.root
    assert a.root.parent == tmp_path / "outputs" / "smoke" / "ablations"


def test_bad_names_are_errors_that_name_them(tmp_path):
    with pytest.raises(ConfigError, match="unknown comparison 'backbones'"):
        ab.parse_ablations("backbones,robustness")
    with pytest.raises(ConfigError, match="unknown row 'Resnet'"):
        ab.variants(_cfg(tmp_path, ablation_weights="Resnet=/x"))
    with pytest.raises(ConfigError, match="'ViT' is not of the form"):
        ab.variants(_cfg(tmp_path, ablation_weights="ViT"))
    vs = {v.row: v for v in ab.variants(_cfg(tmp_path, ablation_weights="ViT=/w/vit, Swin=/w/swin"))}
    assert vs["ViT"].overrides["backbone_weights"] == "/w/vit" and vs["ResNet"].overrides["backbone_weights"] == "none"


@pytest.mark.parametrize("lo,hi,paper,expected", [(0.01, 0.2, -0.1, "disagrees"), (-0.2, -0.01, -0.1, "agrees"),
                                                  (-0.05, 0.05, -0.1, "inconclusive"), (0.01, 0.2, None, "no paper")])
def test_verdict_needs_an_interval_that_excludes_zero(lo, hi, paper, expected):
    assert results.verdict(paper, lo, hi).startswith(expected)


def _fake_run(root: Path, y: np.ndarray, fold_probs: np.ndarray) -> Path:
    """The files step 01 and step 05 leave that the tables read: manifest test rows, fold probabilities, temperatures."""
    (root / "01_assemble").mkdir(parents=True)
    (root / "05_ensemble").mkdir(parents=True)
    man = pd.DataFrame(y, columns=list(LABELS)).assign(id=[f"t{i}" for i in range(len(y))], stage="II", split="test")
    man.to_csv(root / "01_assemble" / "manifest.csv", index=False)
    np.save(root / "05_ensemble" / "test_fold_probs.npy", fold_probs)
    pd.DataFrame({"label": list(LABELS), "temperature": 1.0}).to_csv(root / "05_ensemble" / "calibration.csv", index=False)
    return root


def test_paired_difference_and_voting_on_known_answers(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < 0.3).astype(float)
    good = np.clip(y * 0.35 + rng.random((3, 300, 5)) * 0.65, 0, 1)  # informative, three folds
    noise = rng.random((3, 300, 5))
    a, b = _fake_run(tmp_path / "a", y, good), _fake_run(tmp_path / "b", y, noise)
    d, lo, hi = results.paired_delta(a, b, 200, 0)
    assert 0.2 < d and lo > 0.1 and hi > lo
    d0, lo0, hi0 = results.paired_delta(a, a, 50, 0)
    assert d0 == lo0 == hi0 == 0
    (a / "05_ensemble" / "test_fold_probs.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_fold_probs.npy is missing: step 05 of .*/a did not finish"):
        results.paired_delta(a, b, 10, 0)
    a = _fake_run(tmp_path / "a2", y, good)
    votes = results.voting_table(a, 200, 0).set_index("rule")
    assert votes.loc["hard", "distinct_scores_per_label"] <= 4 < votes.loc["soft", "distinct_scores_per_label"]
    assert votes.loc["soft", "test_auroc"] > votes.loc["hard", "test_auroc"] > 0.6
    assert votes.loc["soft", "test_low"] < votes.loc["soft", "test_auroc"] < votes.loc["soft", "test_high"]


def _write_real(run_dir: Path, y: np.ndarray, p: np.ndarray, errors=None) -> Path:
    """A run's real-ECG check as step 05 writes it: labels, calibrated probabilities and an error per record."""
    out = run_dir / "05_ensemble" / "real_check"
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(y, columns=list(LABELS)).assign(id=[f"ptbxl{i:05d}" for i in range(len(y))])
    df[[f"p_{k}" for k in LABELS]] = p
    df["error"] = errors if errors is not None else ""
    df.to_csv(out / "real_predictions.csv", index=False)
    return run_dir


def test_real_test_column_and_head_to_head_on_known_answers(tmp_path):
    rng = np.random.default_rng(1)
    y = (rng.random((200, 5)) < 0.3).astype(float)
    good = np.clip(y * 0.4 + rng.random((3, 200, 5)) * 0.6, 0, 1)
    noise = rng.random((3, 200, 5))
    a, b = _fake_run(tmp_path / "a", y, good), _fake_run(tmp_path / "b", y, noise)
    errors = [""] * 199 + ["unreadable: truncated JPEG"]  # a record that failed is left out of both sides
    _write_real(a, y, good[0], errors)
    _write_real(b, y, noise[0])
    assert len(results.real_predictions(a)) == 199 and results.real_predictions(tmp_path / "nowhere") is None
    d, lo, hi = results.paired_delta_real(a, b, 100, 0)
    assert d > 0.2 and lo > 0.1
    assert results.paired_delta_real(a, tmp_path / "nowhere", 10, 0) is None
    status = pd.DataFrame([{"row": "R", "status": "complete", "run_dir": str(a)},
                           {"row": "S", "status": "complete (the baseline run)", "run_dir": str(b)},
                           {"row": "T", "status": "not run: no recorded Stage I images", "run_dir": ""}])
    versus = results.head_to_head(status, "R", "S", 100, 0).set_index("test_set")
    assert list(versus["better"]) == ["R", "R"] and versus["delta"].str.match(r"^0\.\d{3} \[").all()
    flipped = results.head_to_head(status, "S", "R", 100, 0)
    assert list(flipped["better"]) == ["R", "R"] and (flipped["high"] < 0).all()
    missing = results.head_to_head(status, "R", "T", 10, 0)
    assert missing["status"].iloc[0] == "T: not complete in this grid"


def test_stage1_sources_keep_their_kinds():
    from utils.train.stages import stage1_kind, stage1_rows

    table = pd.DataFrame({"source": ["synth_scan", "synth_scan", "ptbxl", "ptbxl", "scans:ecg-images", "scans:ecg-images",
                                     "wfdb", "synth_photo"],
                          "split": ["stage1", "stage1_val"] * 3 + ["stage1", "train"]}).assign(stage="I")
    assert stage1_kind(table["source"]).tolist()[:5] == ["simulated", "simulated", "recorded", "recorded", "real"]
    sizes = {k: tuple(len(part) for part in stage1_rows(table, k))
             for k in ("all", "real", "synthetic", "simulated", "recorded")}
    assert sizes == {"all": (4, 3), "real": (1, 1), "synthetic": (3, 2), "simulated": (1, 1), "recorded": (2, 1)}
    with pytest.raises(ValueError, match="'stage1_val' rows of kind 'recorded'.*from stage1_render_dirs"):
        stage1_rows(table[table["source"] != "ptbxl"], "recorded")


def test_recorded_waveforms_leave_out_the_real_test_patients(tmp_path):
    from tests.conftest import ptbxl_subset
    from utils.data.leakage import leakage_guard, real_test_records

    test_dir = ptbxl_subset(tmp_path / "real-test", n=3, first_id=1, patients=[11, 12, 13])
    more = ptbxl_subset(tmp_path / "more", n=5, first_id=501, patients=[21, 12, 23, 24, 13])  # two patients shared
    cfg = _cfg(tmp_path, "demo", ablation_real_test=str(test_dir), ablation_stage1_records=str(more),
               synth_page_width=440, synth_page_height=340, num_workers=1)
    base = ab.base_overrides(cfg)
    assert base["real_check_dirs"] == str(test_dir)
    folder = recorded.recorded_folder(base)
    assert base["stage1_render_dirs"] == str(folder) and folder.parent == tmp_path / "outputs" / "data"
    info = recorded.render_recorded(base, progress=False)
    assert (info["records"], info["left_out"], info["failed"]) == (3, 2, 0)
    made = pd.read_csv(folder / "train.csv", dtype={"id": str})
    assert sorted(made["id"]) == ["ptbxl00501", "ptbxl00503", "ptbxl00504"]
    left = pd.read_csv(folder / "left_out.csv")
    assert sorted(left["group"]) == ["p12", "p13"] and (left["why"].str.contains("patient")).all()
    # the manifest's guard refuses Stage I renders of a real-test patient, naming one
    real = real_test_records(str(test_dir))
    assert real.ids == {1, 2, 3} and real.groups == {"p11", "p12", "p13"}
    df = pd.DataFrame({"stage": ["I", "I", "II"], "ecg_id": [501, 502, np.nan], "group": ["p21", "p12", "x"],
                       "id": ["ptbxl:ptbxl00501", "ptbxl:ptbxl00502", "t0"]})
    with pytest.raises(ValueError, match=r"1 Stage I rows are renders of records or patients of the real-ECG test "
                                         r"set .*ptbxl:ptbxl00502 \(p12\)"):
        leakage_guard(df, False, real)
    assert leakage_guard(df, True, real)["real_test_overlap_rows"] == 1
    assert leakage_guard(df.iloc[[0, 2]], False, real)["real_test_overlap_rows"] == 0
    # a folder that holds no records is an error that names it
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no WFDB header \(\.hea\) under .*empty"):
        recorded.render_recorded(ab.base_overrides(_cfg(tmp_path, "demo", ablation_real_test=str(test_dir),
                                                  ablation_stage1_records=str(tmp_path / "empty"))), progress=False)
    # without the folders the grid renders nothing and leaves the Stage I sources alone
    none = ab.base_overrides(_cfg(tmp_path, "demo", ablation_real_test="", ablation_stage1_records=str(tmp_path / "x")))
    assert recorded.recorded_folder(none) is None and none["stage1_render_dirs"] == ""


def _sample(**kw):
    s = SynthSettings(style="photo", seed=5, page_width=550, page_height=425, photo_max_side=700, **kw)
    data, ann, _ = make_sample(s, 3)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), ann


def test_a_sweep_changes_its_artefact_and_nothing_else():
    img0, ann0 = _sample()
    moves = {"perspective": {"rotation_deg", "keystone", "bow_px", "corner_lift_px"},
             "blur": {"defocus_sigma", "motion_blur_px"}, "shadow": {"light_gradient", "vignette"},
             "jpeg_quality": {"jpeg_quality"}, "crumple": {"crumple"}, "creases": {"crumple"}}
    for key, level in (("perspective", 3.0), ("blur", 4.0), ("shadow", 0.0), ("jpeg_quality", 20), ("crumple", 2.0),
                       ("creases", 3)):
        img, ann = _sample(**{key: level})
        assert ann["labels"] == ann0["labels"] and ann["findings"] == ann0["findings"] and ann["page"] == ann0["page"]
        changed = {k for k, v in ann["artefacts"].items() if ann0["artefacts"].get(k) != v}
        assert changed and changed <= moves[key], (key, changed)
    flat, flat_ann = _sample(perspective=0.0)
    steep, steep_ann = _sample(perspective=3.0)
    assert flat_ann["artefacts"]["rotation_deg"] == 0 and flat_ann["artefacts"]["keystone"] == 0
    assert abs(steep_ann["artefacts"]["keystone"]) == pytest.approx(3 * abs(ann0["artefacts"]["keystone"]), abs=2e-3)
    sharp, _ = _sample(blur=0.0)
    soft, soft_ann = _sample(blur=4.0)
    lap = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert soft_ann["artefacts"]["defocus_sigma"] > 0 and lap(soft) < 0.7 * lap(sharp)
    assert _sample(jpeg_quality=20)[1]["artefacts"]["jpeg_quality"] == 20
    with pytest.raises(ValueError, match="blur must lie between 0 and 10"):
        SynthSettings(blur=-1.0)
    # unset controls leave the settings (and so the cached datasets' keys) as they were
    assert "blur" not in SynthSettings().to_dict() and SynthSettings(blur=2.0).to_dict()["blur"] == 2.0


def test_sweep_plan_shares_the_default_set(tmp_path):
    plan = rb.plan_sets(_cfg(tmp_path))
    assert sum(p["sweep"] == "default" for p in plan) == 1 and plan[-1]["settings"].style == "scan"
    # the default set's own levels (its mix holds some crumpled paper: the crumple sweep's level 0 is a set of flat
    # sheets of its own)
    assert rb.DEFAULT_LEVEL == {"perspective": 1.0, "shadow": 1.0, "blur": 1.0}
    for name, (key, levels, _) in rb.SWEEPS.items():
        got = sorted(p["level"] for p in plan if p["sweep"] == name)
        assert got == sorted(lv for lv in levels if lv != rb.DEFAULT_LEVEL.get(name)), name
    creases = [p["settings"] for p in plan if p["sweep"] == "creases"]
    assert {s.crumple for s in creases} == {1.0} and [s.creases for s in creases] == [0, 2, 4, 8]
    flat = [p["settings"] for p in plan if p["sweep"] == "crumple" and p["level"] == 0.0]
    assert len(flat) == 1 and flat[0].crumple_rate == 0.0 and plan[0]["settings"].crumple_rate == 0.25
    seeds = {p["settings"].seed for p in plan}
    assert seeds == {_cfg(tmp_path)["seed"] + rb.SEED_OFFSET}
    with pytest.raises(ValueError, match="robustness_images must be at least 4"):
        rb.make_sets(_cfg(tmp_path), tmp_path, 2)


@pytest.mark.slow
def test_notebook_07_builds_tables_reuses_runs_and_lists_failures(tmp_path):
    from tests.conftest import ptbxl_subset
    from utils.core.atomic import read_json
    from utils.pipeline.runner import run_pipeline

    real = ptbxl_subset(tmp_path / "real-test", patients=[11, 12, 13, 14, 15, 16])
    more = ptbxl_subset(tmp_path / "more", n=12, first_id=501, patients=[*range(21, 32), 13])  # one shared patient
    over = {"working_root": str(tmp_path), "ablations": "strategy,preprocessing,robustness", "robustness_images": 6,
            "bootstrap_samples": 30, "ablation_real_test": str(real), "ablation_stage1_records": str(more)}
    run = run_pipeline("smoke", "07", over)
    out = run / "07_ablations"
    strategy = pd.read_csv(out / "table_strategy.csv").set_index("row")
    assert strategy.loc["Stage I real", "status"].startswith("not run: no real Stage I images")
    assert strategy.loc["Stage I synthetic", "status"].startswith("complete (the baseline run")
    for row in ("Stage II alone", "Stage I recorded waveforms", "Stage I simulated waveforms"):
        assert strategy.loc[row, "status"] == "complete" and strategy.loc[row, "real_records"] == 6
        assert str(strategy.loc[row, "real_delta"])[:1] in "-0"
    assert strategy["real"].dropna().str.match(r"^(\d\.\d{3} \[|-$)").all()
    for row, sources in (("Stage I recorded waveforms", {"ptbxl"}), ("Stage I simulated waveforms", {"synth_scan"}),
                         ("Stage I real + synthetic", {"ptbxl", "synth_scan"})):
        summary = read_json(Path(strategy.loc[row, "run_dir"]) / "03_stage1" / "step.json")["summary"]
        assert set(summary["train_sources"]) == sources, row
    versus = pd.read_csv(out / "recorded_vs_simulated.csv")
    assert list(versus["test_set"]) == ["synthetic photos", "real ECGs (PTB-XL, photo style)"]
    grid_root = Path(read_json(out / "step.json")["summary"]["grid"])
    base_cfg = (grid_root / "base" / "config.yaml").read_text()
    assert f"real_check_dirs: {real}" in base_cfg and "stage1-recorded-" in base_cfg
    left = pd.read_csv(next((tmp_path / "outputs" / "data").glob("stage1-recorded-*/left_out.csv")))
    assert left["id"].tolist() == ["ptbxl00512"] and left["group"].tolist() == ["p13"]
    table = pd.read_csv(out / "table_preprocessing.csv")
    assert list(table["row"]) == ["raw", "roi_clahe", "seg_rect"]
    assert (table["status"] == "complete").all() and table["test_auroc"].between(0, 1).all()
    for r in table.itertuples():
        assert (Path(r.run_dir) / "05_ensemble" / "model.pt").is_file()
        cfg = (Path(r.run_dir) / "config.yaml").read_text()
        assert f"train_strategy: {r.row}" in cfg
    assert table.loc[table.row != "roi_clahe", "delta"].str.match(r"^-?\d\.\d{3} \[").all()
    curve = pd.read_csv(out / "robustness.csv")
    assert len(curve) == len(rb.plan_sets(resolve_config("smoke"))) and set(curve["style"]) == {"photo", "scan"}
    assert "## preprocessing" in (out / "tables.md").read_text() and (out / "robustness.png").is_file()
    stamps = {p: p.stat().st_mtime for p in grid_root.glob("*/0[3-5]_*/step.json")}
    # a second run of the notebook reuses every grid run
    run_pipeline("smoke", "07", over, force=True)
    assert {p: p.stat().st_mtime for p in grid_root.glob("*/0[3-5]_*/step.json")} == stamps
    # a row that fails is a listed row, not the end of the grid
    grid = ab.Grid(resolve_config("smoke", over), resolve_paths(resolve_config("smoke", over)))
    bad = ab.Variant("backbone", "broken", "backbone-broken", {"backbone": "no_such_net"})
    row = grid.run_variant(bad)
    assert row["status"].startswith("failed") and "no_such_net" in row["status"]
    assert json.loads((grid.root / "base" / "01_assemble" / "step.json").read_text())["status"] == "complete"


def test_robustness_command_scores_models_side_by_side(tmp_path, package, capsys):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(f"working_root: {tmp_path / 'work'}\ndevice: cpu\nnum_workers: 1\nsynth_page_width: 330\n"
                       "synth_page_height: 255\nsynth_photo_max_side: 640\nseed: 3\n")
    import shutil

    other = shutil.copy(package, tmp_path / "other.pt")  # the same weights under another name: the same scores
    argv = ["--model", str(package), "--model", str(other), "--sweeps", "crumple", "--profile", str(profile),
            "--images", "8", "--bootstrap", "10", "--out", str(tmp_path / "o")]
    assert rb.main(argv) == 0
    out = tmp_path / "o" / "run"
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 2 * 6  # two models x (default, crumple 0-3, the scan-like set)
    assert sorted(curves[curves["sweep"] == "crumple"]["level"].unique()) == [0.0, 1.0, 2.0, 3.0]
    first, second = (part.reset_index(drop=True) for _, part in curves.groupby("model", sort=False))
    assert first[["sweep", "level", "images"]].equals(second[["sweep", "level", "images"]])
    assert np.allclose(first[list(LABELS)].to_numpy(float), second[list(LABELS)].to_numpy(float), equal_nan=True)
    assert (first["images"] == 8).all()
    assert all((out / f).is_file() for f in ("examples.png", "curves-1.png", "curves-2.png"))
    assert rb.main(argv[:4] + ["--sweeps", "folds", "--profile", str(profile), "--out", str(tmp_path / "o")]) == 2
    assert "unknown sweep(s) ['folds']" in capsys.readouterr().err
    assert rb.main(["--model", str(tmp_path / "none.pt")]) == 2
    assert f"--model: no such file ['{tmp_path / 'none.pt'}']" in capsys.readouterr().err
