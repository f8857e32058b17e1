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
