from pathlib import Path

import pytest

from utils.core import paths as P
from utils.core.config import resolve_config


def test_auto_roots_off_kaggle(monkeypatch):
    monkeypatch.setattr(P, "on_kaggle", lambda: False)
    p = P.resolve_paths(resolve_config("demo"))
    assert p.input_root is None
    assert p.working_root == P.REPO_ROOT
    assert p.output_root == P.REPO_ROOT / "outputs" and p.data_root == P.REPO_ROOT / "outputs" / "data"
    with pytest.raises(FileNotFoundError, match="set input_root"):
        p.input("x")


def test_auto_roots_on_kaggle(monkeypatch):
    monkeypatch.setattr(P, "on_kaggle", lambda: True)
    p = P.resolve_paths(resolve_config("kaggle"))
    assert p.input_root == Path("/kaggle/input")
    assert p.output_root == Path("/kaggle/working/outputs")
    assert p.data_root == Path("/kaggle/temp/data") and not p.data_saved  # drawn again, never saved


def test_every_root_can_be_overridden(tmp_path):
    cfg = resolve_config("kaggle", {"input_root": str(tmp_path / "in"), "working_root": str(tmp_path / "w"),
                                    "data_root": str(tmp_path / "d")})
    p = P.resolve_paths(cfg)
    assert (p.input_root, p.working_root, p.output_root, p.data_root) == (
        tmp_path / "in", tmp_path / "w", tmp_path / "w" / "outputs", tmp_path / "d")


def test_attached_datasets_are_found_by_marker(tmp_path):
    (tmp_path / "bhf-ecg" / "data").mkdir(parents=True)
    (tmp_path / "bhf-ecg" / "data" / "train.csv").write_text("id\n")
    (tmp_path / "other").mkdir()
    p = P.resolve_paths(resolve_config("kaggle", {"input_root": str(tmp_path)}))
    assert P.find_inputs(p, "train.csv") == [tmp_path / "bhf-ecg" / "data"]
    assert P.resolve_input_path(p, "", "train.csv", "competition data", "x") == tmp_path / "bhf-ecg" / "data"
    assert P.resolve_input_path(p, "other", "train.csv", "competition data", "x") == tmp_path / "other"
    with pytest.raises(FileNotFoundError, match=r"no folder with weights.safetensors under .*set 'weights_key'"):
        P.resolve_input_path(p, "", "weights.safetensors", "backbone weights", "weights_key")
    with pytest.raises(FileNotFoundError, match=r"missing does not exist \(set by 'k'\)"):
        P.resolve_input_path(p, str(tmp_path / "missing"), "m", "thing", "k")
