"""config/*.yaml mirror the config dataclasses 1:1 (defaults in one place)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neural_reloc.config_io import ConfigError, config_files, from_dict, load_yaml, merge, parse_dotted, to_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def test_every_builtin_method_has_its_config_file():
    assert set(config_files()) == {"neural_map.yaml", "crossfire.yaml", "classical.yaml", "nerfmatch.yaml", "kscr.yaml",
                                   "posemap.yaml"}
    assert {p.name for p in CONFIG_DIR.glob("*.yaml")} >= set(config_files())


@pytest.mark.parametrize("fname", sorted(config_files()))
def test_yaml_equals_dataclass_defaults(fname):
    cls = config_files()[fname]
    assert load_yaml(CONFIG_DIR / fname) == to_dict(cls()), (
        f"config/{fname} is out of date: python -m neural_reloc.config_io"
    )
    # and it loads back into the dataclass
    assert to_dict(from_dict(cls, load_yaml(CONFIG_DIR / fname))) == to_dict(cls())


def test_unknown_key_is_an_error_naming_it():
    cls = config_files()["crossfire.yaml"]
    with pytest.raises(ConfigError, match="localization.*max_iteration"):
        from_dict(cls, {"localization": {"max_iteration": 3}})


def test_dotted_overrides_are_typed():
    cls = config_files()["crossfire.yaml"]
    cfg = merge(cls(), parse_dotted(["localization.max_iterations=5", "map.encoding_unused=1"][:1]))
    assert cfg.localization.max_iterations == 5 and isinstance(cfg.localization.max_iterations, int)


def test_exponent_without_a_dot_is_a_number_for_float_fields():
    # YAML 1.1 (PyYAML) reads "1e-3" as a string; a float field takes it as the number.
    cls = config_files()["crossfire.yaml"]
    cfg = merge(cls(), parse_dotted(["loss.lambda_tv=1e-3", "train.cnn_time_budget_s=2e1"]))
    assert cfg.loss.lambda_tv == 1e-3 and cfg.train.cnn_time_budget_s == 20.0
    with pytest.raises(ConfigError, match="loss.lambda_tv: expected a number, got 'fast'"):
        merge(cls(), parse_dotted(["loss.lambda_tv=fast"]))
    with pytest.raises(ConfigError, match="localization.max_iterations: expected an integer"):
        merge(cls(), parse_dotted(["localization.max_iterations=1e1"]))


def test_a_partial_nested_section_keeps_its_parents_defaults():
    """An old map's manifest (or a user file) without a nested key gets the default the
    enclosing config gives it: localization.pnp's 1-cell threshold and 500-point RANSAC
    subset, not PnPConfig's own 4 px and 0."""
    from neural_reloc.geometry.pnp import PnPConfig
    from neural_reloc.methods.crossfire.config import LocalizationConfig

    cls = config_files()["crossfire.yaml"]
    cfg = from_dict(cls, {"localization": {"pnp": {"seed": 3}}})
    expect = LocalizationConfig().pnp
    assert cfg.localization.pnp.seed == 3
    assert cfg.localization.pnp.reprojection_threshold_px == expect.reprojection_threshold_px
    assert cfg.localization.pnp.max_ransac_points == expect.max_ransac_points
    assert (expect.reprojection_threshold_px, expect.max_ransac_points) != (
        PnPConfig().reprojection_threshold_px,
        PnPConfig().max_ransac_points,
    )
    with pytest.raises(ConfigError, match="localization.pnp.*sead"):
        from_dict(cls, {"localization": {"pnp": {"sead": 3}}})
