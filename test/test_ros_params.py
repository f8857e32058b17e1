"""The nodes' parameters: YAML files == dataclass defaults, descriptors on a real node."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from neural_reloc.ros import params
from neural_reloc.ros.config import MapBuilderConfig, NodeConfig, validate_node_config
from neural_reloc.tracking import TrackingConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "relocalization_node": (NodeConfig, REPO_ROOT / "config" / "relocalize.yaml"),
    "map_builder": (MapBuilderConfig, REPO_ROOT / "config" / "build_map.yaml"),
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _load(path: Path, node: str) -> dict:
    data = yaml.safe_load(path.read_text())
    key = params.PARAMETER_FILE_KEYS[node]
    assert list(data) == [key], f"{path}: top level must be just {key!r}"
    assert list(data[key]) == ["ros__parameters"]
    return _flatten(data[key]["ros__parameters"])


@pytest.mark.parametrize("node", sorted(FILES))
def test_yaml_equals_dataclass_defaults(node):
    cls, path = FILES[node]
    values = _load(path, node)
    specs = [s for s in (params.node_parameter_specs() if cls is NodeConfig else params.parameter_specs(cls()))
             if not s.unset]  # the methods' settings are written commented out (unset)
    assert list(values) == [s.name for s in specs], f"{path}: keys differ from {cls.__name__}'s fields"
    for spec in specs:
        value = values[spec.name]
        assert value == spec.default, f"{path}: {spec.name} = {value!r}, dataclass default {spec.default!r}"
        # ROS types values from their YAML spelling: a float must be written as one.
        expected_type = {"bool": bool, "int": int, "float": float, "str": str, "float_list": list}[spec.kind]
        assert type(value) is expected_type, f"{path}: {spec.name} is written as {type(value).__name__}"
    # The file is exactly what the generator writes (descriptions included).
    assert path.read_text() == params.render_yaml(node), (
        f"{path} is stale: regenerate with python -m neural_reloc.ros.params {node} > {path.relative_to(REPO_ROOT)}"
    )


def test_node_config_nests_the_core_configs():
    values = _load(FILES["relocalization_node"][1], "relocalization_node")
    cfg = params.config_from_values(values)
    assert cfg == NodeConfig()
    assert cfg.tracking == TrackingConfig()
    tracking = {f"tracking.{f.name}" for f in dataclasses.fields(TrackingConfig)}
    assert tracking <= set(values)
    assert not [k for k in values if k.startswith(("localization.", "crossfire.", "classical."))]
    assert validate_node_config(cfg) is cfg


def test_every_relocalizing_method_has_its_settings_commented_in_the_yaml():
    """Each registered method's LocalizationConfig is documented in relocalize.yaml under
    its name, commented out: uncommented, a line is a valid parameter of that method."""
    from neural_reloc.methods.registry import get_method, relocalizing_methods

    text = FILES["relocalization_node"][1].read_text()
    specs = params.method_parameter_specs()
    assert {s.name.split(".")[0] for s in specs} == set(relocalizing_methods()) >= {"crossfire", "classical"}
    for method in relocalizing_methods():
        names = [s.name for s in specs if s.name.startswith(method + ".")]
        loc_fields = params.parameter_specs(get_method(method).localization_config(), f"{method}.")
        assert names == [s.name for s in loc_fields]
        assert all(s.unset and s.read_only for s in specs)
    assert "    # crossfire:" in text and "    #   min_inliers: 12" in text


@pytest.mark.parametrize("node", sorted(FILES))
def test_every_parameter_has_a_description_and_sane_metadata(node):
    cls, _ = FILES[node]
    specs = params.parameter_specs(cls())
    missing = [s.name for s in specs if len(s.description) < 10]
    assert not missing, f"parameters without a description: {missing}"
    for s in specs:
        if s.range is not None:
            lo, hi = s.range
            assert lo <= s.default <= hi, f"{s.name}: default {s.default} outside its range {s.range}"
            assert s.kind in ("int", "float"), s.name
        if s.choices:
            assert s.default in s.choices, s.name
    if cls is MapBuilderConfig:
        assert all(s.read_only for s in specs)
    else:
        method_specs = params.method_parameter_specs()
        assert not [s.name for s in method_specs if len(s.description) < 10]
        for s in method_specs:
            if s.range is not None and s.kind in ("int", "float"):
                assert s.range[0] <= s.default <= s.range[1], s.name


def test_read_only_flags_of_the_relocalization_node():
    by_name = {s.name: s for s in params.node_parameter_specs()}
    for name in ("image_topic", "camera_info_topic", "map_frame", "odom_frame", "device", "autostart", "image_qos",
                 "nav2_mode", "rectified"):
        assert by_name[name].read_only, name
    assert all(s.read_only and s.unset for n, s in by_name.items() if n.startswith("crossfire."))
    # Safe to change live: the map (reloaded atomically), tracking thresholds, Nav2.
    for name in ("map_path", "tracking.accept_min_inliers", "nav2_min_interval_s", "nav2_max_disagreement_m",
                 "publish_tf", "pose_of"):
        assert not by_name[name].read_only, name
    assert by_name["image_qos"].choices == ("sensor_data", "reliable")
    assert by_name["crossfire.pnp.refine_loss"].choices  # from geometry.pnp.POSELIB_LOSSES


def test_config_from_values_is_strict_and_validation_names_the_parameter():
    values = {s.name: s.default for s in params.parameter_specs()}
    with pytest.raises(ValueError, match="no_such_param"):
        params.config_from_values({**values, "no_such_param": 1})
    with pytest.raises(ValueError, match="pose_of"):
        validate_node_config(params.config_from_values({**values, "pose_of": "wheel"}))
    with pytest.raises(ValueError, match="base_from_camera_quat_xyzw"):
        validate_node_config(params.config_from_values({**values, "base_from_camera_quat_xyzw": [0.0, 0.0, 0.0, 2.0]}))
    with pytest.raises(ValueError, match="must differ"):
        validate_node_config(params.config_from_values({**values, "odom_frame": "map"}))
    spec = {s.name: s for s in params.parameter_specs()}["image_qos"]
    assert "must be one of" in params.check_value(spec, "fast")
    assert params.check_value(spec, "reliable") == ""


def test_yaml_floats_are_read_back_as_floats():
    for v in (0.0, 1.0, 1e-3, 1e-5, 2.5e10, 60.0, -0.25):
        text = params._yaml_float(v)
        assert "." in text, text
        assert yaml.safe_load(text) == v and isinstance(yaml.safe_load(text), float), text
    with pytest.raises(ValueError):
        params._yaml_float(math.inf)


# ----------------------------------------------------------------------- on a node
@pytest.mark.requires_ros
def test_descriptors_on_a_real_node_with_the_shipped_yaml():
    import rclpy
    from rcl_interfaces.msg import ParameterType
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    path = FILES["relocalization_node"][1]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(path), "-p", "map_path:=/tmp/some_map",
                                  "-p", "crossfire.min_inliers:=30", "-p", "crossfire.pnp.seed:=4"])
    try:
        node = Node("relocalization_node", context=ctx)
        specs = params.declare_parameters(node)
        cfg = params.config_from_node(node, specs)
        assert cfg.map_path == "/tmp/some_map" and cfg.tracking == TrackingConfig()
        # Only the method settings a user set exist (the rest keep the map's values).
        assert params.method_overrides_from_node(node, specs, "crossfire") == {
            "localization": {"min_inliers": 30, "pnp": {"seed": 4}}}
        assert params.method_overrides_from_node(node, specs, "classical") == {}
        assert params.methods_with_settings(node, specs) == ["crossfire"]
        descriptors = node.describe_parameters([s.name for s in specs])
        for spec, d in zip(specs, descriptors):
            assert d.description == spec.description and d.description
            assert d.read_only == spec.read_only
            if spec.kind == "float" and spec.range:
                assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == spec.range
            if spec.kind == "int" and spec.range:
                assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == spec.range
        assert descriptors[[s.name for s in specs].index("base_from_camera_xyz")].type == (
            ParameterType.PARAMETER_DOUBLE_ARRAY
        )
        # rclpy enforces read-only and ranges from the descriptors
        result = node.set_parameters([Parameter("image_topic", value="/other")])[0]
        assert not result.successful and "read-only" in result.reason
        result = node.set_parameters([Parameter("tracking.accept_min_inlier_ratio", value=1.5)])[0]
        assert not result.successful
        result = node.set_parameters([Parameter("tracking.accept_min_inlier_ratio", value=0.5)])[0]
        assert result.successful
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.requires_ros
def test_wrongly_typed_startup_value_names_the_parameter():
    import rclpy
    from rclpy.node import Node

    ctx = rclpy.Context()
    # 5 (an integer) for a float parameter: ROS does not convert, we say what to write.
    rclpy.init(context=ctx, args=["--ros-args", "-p", "nav2_min_interval_s:=5"])
    try:
        node = Node("relocalization_node", context=ctx)
        with pytest.raises(ValueError, match=r"nav2_min_interval_s: expected a float \(e.g. 5.0\)"):
            params.declare_parameters(node)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
