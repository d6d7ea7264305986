import pytest
import yaml

from utils.core.config import (
    CONFIG_KEYS,
    DEFAULTS,
    OPTIONS,
    ConfigError,
    coerce_value,
    diff_configs,
    load_profile,
    notebook_overrides,
    parse_overrides,
    resolve_config,
    save_config,
)


def test_every_option_is_typed_commented_and_its_default_fits():
    for opt in OPTIONS:
        assert opt.help.strip(), opt.name
        assert coerce_value(opt.name, opt.default) == opt.default


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown configuration key 'sed'; did you mean 'seed'\?"):
        resolve_config("demo", {"sed": 1})
    with pytest.raises(ConfigError, match=r"did you mean 'synth_photo_test'"):
        parse_overrides(["synth_photo_tset=3"])


def test_type_errors_name_the_key_and_value():
    with pytest.raises(ConfigError, match=r"key 'seed' expects int, got 'abc'"):
        parse_overrides(["seed=abc"])
    with pytest.raises(ConfigError, match=r"key 'seed' expects int, got bool True"):
        resolve_config("kaggle", {"seed": True})
    with pytest.raises(ConfigError, match=r"key 'synth_severity' expects float, got 'x'"):
        coerce_value("synth_severity", "x", from_text=True)
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["seed"])


def test_a_value_outside_a_keys_choices_is_refused_naming_them():
    with_choices = [opt for opt in OPTIONS if opt.choices]
    assert len(with_choices) >= 5
    for opt in with_choices:
        with pytest.raises(ConfigError, match=rf"key '{opt.name}' must be one of \[.*\], got 'nonsense'"):
            resolve_config("kaggle", {opt.name: "nonsense"})
        for choice in opt.choices:
            assert resolve_config("kaggle", {opt.name: choice})[opt.name] == choice
    with pytest.raises(ConfigError, match=r"key 'stage1_sources' must be one of \['all', 'real', 'synthetic', "
                                          r"'simulated', 'recorded'\], got 'scans'"):
        parse_overrides(["stage1_sources=scans"])


def test_command_line_text_is_converted_by_type():
    got = parse_overrides(["seed=7", "synth_severity=0.5", "device=cuda:1", "synth_from_wfdb="])
    assert got == {"seed": 7, "synth_severity": 0.5, "device": "cuda:1", "synth_from_wfdb": ""}
    assert isinstance(coerce_value("synth_severity", 2), float)


def test_profiles_are_deltas_on_the_defaults():
    kaggle = resolve_config("kaggle")
    assert {k: v for k, v in kaggle.items() if k != "profile"} == {k: v for k, v in DEFAULTS.items()
                                                                   if k != "profile"}
    demo = resolve_config("demo")
    assert demo.profile == "demo" and demo.device == "cpu"
    assert demo.synth_scan_train < kaggle.synth_scan_train
    assert demo.seed == kaggle.seed  # untouched keys keep the default
    smoke = resolve_config("smoke", {"seed": 3})
    assert smoke.seed == 3 and smoke.synth_photo_train <= 50


def test_profile_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown profile 'dmeo'.*did you mean 'demo'"):
        resolve_config("dmeo")
    bad = tmp_path / "mine.yaml"
    bad.write_text("seed: 1\nepohcs: 3\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: unknown configuration key 'epohcs'"):
        load_profile(str(bad))
    good = tmp_path / "good.yaml"
    good.write_text("seed: 5\n")
    assert resolve_config(str(good)).seed == 5


def test_attribute_access_to_unknown_key_is_an_error():
    cfg = resolve_config("smoke")
    with pytest.raises(AttributeError, match="did you mean 'seed'"):
        cfg.seeed


def test_notebook_overrides_take_only_changed_config_keys():
    ns = {"seed": DEFAULTS["seed"], "synth_photo_test": 5, "profile": "demo", "np": object(), "x": 1}
    assert notebook_overrides(ns) == {"synth_photo_test": 5}


def test_saved_config_round_trips(tmp_path):
    cfg = resolve_config("demo", {"seed": 9})
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == dict(cfg)
    assert diff_configs(cfg, {**cfg, "seed": 10}) == {"seed": (9, 10)}
    assert set(cfg) == CONFIG_KEYS


def test_a_key_added_later_is_no_difference_for_old_runs():
    cfg = resolve_config("demo")
    old = {k: v for k, v in cfg.items() if k != "bootstrap_samples"}  # written before the key existed
    assert diff_configs(old, cfg) == {}
    assert diff_configs(old, {**cfg, "seed": 1}) == {"seed": (42, 1)}
    assert diff_configs({**cfg, "gone": 1}, cfg) == {"gone": (1, None)}
    # a key whose new value asks for what the old run's steps did not do (crumpled paper in the mix) is a difference
    before = {k: v for k, v in cfg.items() if not k.startswith("synth_crumple_")}
    assert diff_configs(before, cfg) == {"synth_crumple_photo": ("0.0 (before the key)", 0.25),
                                         "synth_crumple_scan": ("0.0 (before the key)", 0.1)}
    assert diff_configs(before, {**cfg, "synth_crumple_photo": 0.0, "synth_crumple_scan": 0.0}) == {}


def test_values_papermill_injected_count_even_when_they_equal_the_defaults():
    """`papermill -p profile demo -p lr 0.0001`: lr equals the Kaggle default but was asked for, so it is kept."""
    cell = 'profile: str = "kaggle"\nlr: float = 1e-4\nseed: int = 42\n'
    injected = '# Parameters\nprofile = "demo"\nlr = 0.0001\n'
    ns = {"In": ["", cell, injected], "profile": "demo", "lr": 1e-4, "seed": DEFAULTS["seed"]}
    assert notebook_overrides(ns) == {"lr": 1e-4}
    assert resolve_config("demo", notebook_overrides(ns))["lr"] == 1e-4
    assert notebook_overrides({**ns, "In": ["", cell]}) == {}  # run by hand, cell unchanged: the profile decides
