"""config/*.yaml mirror the config dataclasses 1:1 (defaults in one place)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neural_reloc.config_io import CONFIG_FILES, ConfigError, config_class, from_dict, load_yaml, merge, parse_dotted, to_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("fname", sorted(CONFIG_FILES))
def test_yaml_equals_dataclass_defaults(fname):
    cls = config_class(CONFIG_FILES[fname])
    assert load_yaml(CONFIG_DIR / fname) == to_dict(cls()), (
        f"config/{fname} is out of date: python -m neural_reloc.config_io"
    )
    # and it loads back into the dataclass
    assert to_dict(from_dict(cls, load_yaml(CONFIG_DIR / fname))) == to_dict(cls())


def test_unknown_key_is_an_error_naming_it():
    cls = config_class(CONFIG_FILES["crossfire.yaml"])
    with pytest.raises(ConfigError, match="localization.*max_iteration"):
        from_dict(cls, {"localization": {"max_iteration": 3}})


def test_dotted_overrides_are_typed():
    cls = config_class(CONFIG_FILES["crossfire.yaml"])
    cfg = merge(cls(), parse_dotted(["localization.max_iterations=5", "map.encoding_unused=1"][:1]))
    assert cfg.localization.max_iterations == 5 and isinstance(cfg.localization.max_iterations, int)


def test_exponent_without_a_dot_is_a_number_for_float_fields():
    # YAML 1.1 (PyYAML) reads "1e-3" as a string; a float field takes it as the number.
    cls = config_class(CONFIG_FILES["crossfire.yaml"])
    cfg = merge(cls(), parse_dotted(["loss.lambda_tv=1e-3", "train.cnn_time_budget_s=2e1"]))
    assert cfg.loss.lambda_tv == 1e-3 and cfg.train.cnn_time_budget_s == 20.0
    with pytest.raises(ConfigError, match="loss.lambda_tv: expected a number, got 'fast'"):
        merge(cls(), parse_dotted(["loss.lambda_tv=fast"]))
    with pytest.raises(ConfigError, match="localization.max_iterations: expected an integer"):
        merge(cls(), parse_dotted(["localization.max_iterations=1e1"]))
