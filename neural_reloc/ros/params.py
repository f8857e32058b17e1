"""ROS parameters generated from the config dataclasses, so YAML == dataclass defaults.

:func:`parameter_specs` flattens a config dataclass (``NodeConfig`` with its nested
``tracking`` ...) into dotted parameter names with type, default, description, range,
choices and read-only flag, all from the fields' metadata
(:func:`neural_reloc.config_fields.setting`). :func:`method_parameter_specs` adds each
registered method's localization settings under the method's name
(``crossfire.min_inliers``), declared *unset*: only the values a user sets (YAML, -p)
exist, and only those override the map's stored settings when it is loaded
(:func:`method_overrides_from_node`). Everything here but :func:`declare_parameters`,
:func:`config_from_node` and :func:`method_overrides_from_node` is ROS-free.

``python -m neural_reloc.ros.params`` prints the parameter file
(config/relocalize.yaml is that output; test/test_ros_params.py checks they agree).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Any

from ..config_io import from_dict, to_dict
from .config import MapBuilderConfig, NodeConfig

NODE_NAME = "relocalization_node"
MAP_BUILDER_NAME = "map_builder"
#: Parameter files: node name -> (config dataclass, file under config/).
PARAMETER_FILES = {
    NODE_NAME: (NodeConfig, "relocalize.yaml"),
    MAP_BUILDER_NAME: (MapBuilderConfig, "build_map.yaml"),
}
#: The top-level key of each parameter file: the relocalization node's file is keyed
#: ``/**`` (any node name, any namespace), as Nav2's, so that it applies to the node
#: started in a namespace or under another name.
PARAMETER_FILE_KEYS = {NODE_NAME: "/**", MAP_BUILDER_NAME: MAP_BUILDER_NAME}


@dataclass(frozen=True)
class ParamSpec:
    name: str  # dotted, e.g. "crossfire.pnp.seed"
    kind: str  # bool, int, float, str, float_list
    default: Any
    description: str
    range: tuple | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    #: Declared without a value (a method's setting): unset unless a user sets it.
    unset: bool = False


def _sentence(text: str) -> str:
    """A description as one sentence or more: capitalized, ending with a full stop."""
    text = " ".join(text.split())
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _kind(tp: Any, value: Any, name: str) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "str"
    if typing.get_origin(tp) in (list, tuple) and typing.get_args(tp)[:1] == (float,):
        return "float_list"
    raise TypeError(f"parameter {name}: type {tp} has no ROS parameter equivalent")


def parameter_specs(cfg: Any | None = None, prefix: str = "", *, read_only: bool | None = None,
                    unset: bool = False) -> list[ParamSpec]:
    """Every parameter of ``cfg`` (default: ``NodeConfig()``), dotted names in field
    order, under ``prefix``; ``read_only`` forces the flag for all of them (default: each
    field's own, or all for a config with ``ALL_READ_ONLY``)."""
    cfg = NodeConfig() if cfg is None else cfg
    if read_only is None and getattr(cfg, "ALL_READ_ONLY", False):
        read_only = True
    specs: list[ParamSpec] = []

    def walk(obj: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            name = prefix + f.name
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, name + ".")
                continue
            meta = f.metadata
            specs.append(
                ParamSpec(
                    name=name,
                    kind=_kind(hints[f.name], value, name),
                    default=list(value) if isinstance(value, (list, tuple)) else value,
                    description=_sentence(meta.get("description", "")),
                    range=meta.get("range"),
                    choices=meta.get("choices"),
                    read_only=bool(meta.get("read_only", False)) if read_only is None else read_only,
                    unset=unset,
                )
            )

    walk(cfg, prefix)
    return specs


def method_parameter_specs(methods: list[str] | None = None) -> list[ParamSpec]:
    """The localization settings of every registered method that relocalizes (or of
    ``methods``), as unset, read-only parameters under the method's name: the map is
    loaded with them, so they change with the map, not on a running node."""
    from ..methods.registry import get_method, relocalizing_methods

    specs: list[ParamSpec] = []
    for name in relocalizing_methods() if methods is None else methods:
        cls = get_method(name).localization_config
        specs += parameter_specs(cls(), f"{name}.", read_only=True, unset=True)
    return specs


def node_parameter_specs() -> list[ParamSpec]:
    """Everything ``relocalization_node`` declares: its own parameters, then the methods'."""
    return parameter_specs(NodeConfig()) + method_parameter_specs()


def config_from_values(values: dict[str, Any], cls: type = NodeConfig):
    """A ``cls`` config from dotted parameter values (strict: unknown names are errors)."""
    nested: dict = {}
    for name, value in values.items():
        node = nested
        parts = name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = list(value) if isinstance(value, (list, tuple)) else value
    return from_dict(cls, nested)


def check_value(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` is not allowed for ``spec`` ('' when it is): choices and list
    lengths (rclpy itself enforces the type and the range of the descriptor)."""
    if spec.choices and value not in spec.choices:
        return f"{spec.name}={value!r} must be one of {', '.join(spec.choices)}"
    if spec.kind == "float_list" and not spec.unset and len(list(value)) != len(spec.default):
        return f"{spec.name} must have {len(spec.default)} numbers, got {list(value)}"
    if spec.kind == "float_list" and spec.range and any(not spec.range[0] <= v <= spec.range[1] for v in value):
        return f"{spec.name}={list(value)}: every number must be in [{spec.range[0]}, {spec.range[1]}]"
    return ""


# ------------------------------------------------------------------ YAML file
def _yaml_scalar(kind: str, value: Any) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))
    if kind == "float":
        return _yaml_float(value)
    if kind == "float_list":
        return "[" + ", ".join(_yaml_float(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yaml_float(v: float) -> str:
    """A float ROS reads as a double: always with a '.', exponent as 1.0e-05."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"non-finite default {v}")
    text = repr(v)
    if "e" in text:
        mant, exp = text.split("e")
        if "." not in mant:
            mant += ".0"
        return f"{mant}e{exp}"
    return text if "." in text else text + ".0"


def render_yaml(node_name: str = NODE_NAME) -> str:
    """The parameter file of a node (see PARAMETER_FILES), descriptions as comments; a
    method's settings (unset parameters) are written commented out with their defaults:
    uncommented, they override the map's stored values."""
    cls, filename = PARAMETER_FILES[node_name]
    specs = node_parameter_specs() if cls is NodeConfig else parameter_specs(cls())
    lines = [
        f"# Parameters of the neural_reloc {node_name} node (ROS 2 parameter file).",
        f"# Generated from neural_reloc/ros/config.py ({cls.__name__}), the core configs it",
        f"# nests and the methods' localization configs: python -m neural_reloc.ros.params {node_name} > config/{filename}",
        "# test/test_ros_params.py checks that this file equals the dataclass defaults.",
        "# Read-only parameters (marked [read-only]) can only be set at startup.",
        *(["# Keyed /** (every node it is given to, in any namespace), as Nav2's parameter files."]
          if PARAMETER_FILE_KEYS[node_name] == "/**" else []),
        f"{PARAMETER_FILE_KEYS[node_name]}:",
        "  ros__parameters:",
    ]
    open_sections: list[str] = []
    in_methods = False
    for spec in specs:
        if spec.unset and not in_methods:
            in_methods = True
            lines += [
                "    # -- method settings: each method's localization settings, under its name.",
                "    # Unset, a setting keeps the value stored in the map (what it was built and",
                "    # evaluated with); uncomment a line to override it. The defaults shown are",
                "    # those of a map built with this version's defaults.",
            ]
        parts = spec.name.split(".")
        sections, key = parts[:-1], parts[-1]
        hash_ = "# " if spec.unset else ""
        common = 0
        while common < min(len(sections), len(open_sections)) and sections[common] == open_sections[common]:
            common += 1
        for depth in range(common, len(sections)):
            lines.append("    " + hash_ + "  " * depth + f"{sections[depth]}:")
        open_sections = sections
        indent = "    " + "  " * len(sections)
        note = spec.description
        if spec.choices:
            note += f" One of: {', '.join(spec.choices)}."
        if spec.range:
            note += f" Range [{spec.range[0]}, {spec.range[1]}]."
        if spec.read_only:
            note += " [read-only]"
        for text in textwrap.wrap(note, width=max(40, 88 - len(indent) - 2), break_on_hyphens=False):
            lines.append(f"    {hash_}{indent[4:]}# {text}")
        lines.append(f"    {hash_}{indent[4:]}{key}: {_yaml_scalar(spec.kind, spec.default)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ ROS side
def descriptor_of(spec: ParamSpec):
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {
        "bool": ParameterType.PARAMETER_BOOL,
        "int": ParameterType.PARAMETER_INTEGER,
        "float": ParameterType.PARAMETER_DOUBLE,
        "str": ParameterType.PARAMETER_STRING,
        "float_list": ParameterType.PARAMETER_DOUBLE_ARRAY,
    }
    d = ParameterDescriptor(
        name=spec.name, type=types[spec.kind], description=spec.description, read_only=spec.read_only
    )
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None and spec.kind == "float":
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]))]
    elif spec.range is not None and spec.kind == "int":
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    return d


def declare_parameters(node, specs: list[ParamSpec] | None = None) -> list[ParamSpec]:
    """Declare every parameter on ``node`` with its descriptor; raise ValueError naming
    the parameter when a startup value (YAML, -p) has the wrong type or is out of range."""
    from rclpy.exceptions import (
        InvalidParameterTypeException,
        InvalidParameterValueException,
    )

    from rclpy.parameter import Parameter

    specs = node_parameter_specs() if specs is None else specs
    unset_types = {
        "bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "float": Parameter.Type.DOUBLE,
        "str": Parameter.Type.STRING, "float_list": Parameter.Type.DOUBLE_ARRAY,
    }
    for spec in specs:
        try:
            if spec.unset:  # declared typed but without a value: set only by a user
                node.declare_parameter(spec.name, unset_types[spec.kind], descriptor_of(spec))
                if node.get_parameter_or(spec.name, None).type_ == Parameter.Type.NOT_SET:
                    continue
            else:
                node.declare_parameter(spec.name, spec.default, descriptor_of(spec))
        except InvalidParameterTypeException as e:
            raise ValueError(
                f"parameter {spec.name}: expected a {spec.kind} (e.g. {_yaml_scalar(spec.kind, spec.default)}): {e}"
            ) from e
        except InvalidParameterValueException as e:
            raise ValueError(f"parameter {spec.name}: {e}") from e
        problem = check_value(spec, node.get_parameter(spec.name).value)
        if problem:
            raise ValueError(f"invalid parameter: {problem}")
    return specs


def config_from_node(node, specs: list[ParamSpec], changed: dict[str, Any] | None = None, cls: type = NodeConfig):
    """The node's current config (``changed``: values about to be set, by name); the
    methods' (unset) parameters are not part of it."""
    names = {s.name for s in specs if not s.unset}
    values = {n: node.get_parameter(n).value for n in names}
    values.update({k: v for k, v in (changed or {}).items() if k in names})
    return config_from_values(values, cls)


def method_overrides_from_node(node, specs: list[ParamSpec], method: str) -> dict:
    """The settings of ``method`` a user set on the node, as localization overrides
    (``{"localization": {...}}``, nested) for the map's relocalizer; ``{}`` when none."""
    prefix = method + "."
    nested: dict = {}
    for s in specs:
        if not (s.unset and s.name.startswith(prefix)):
            continue
        p = node.get_parameter_or(s.name, None)
        if p.value is None:
            continue
        node_ = nested
        parts = s.name[len(prefix):].split(".")
        for part in parts[:-1]:
            node_ = node_.setdefault(part, {})
        node_[parts[-1]] = list(p.value) if isinstance(p.value, (list, tuple)) else p.value
    return {"localization": nested} if nested else {}


def methods_with_settings(node, specs: list[ParamSpec]) -> list[str]:
    """The methods whose settings a user set on the node (to warn about unused ones)."""
    out = []
    for s in specs:
        method = s.name.split(".", 1)[0]
        if s.unset and method not in out and node.get_parameter_or(s.name, None).value is not None:
            out.append(method)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else NODE_NAME
    if name not in PARAMETER_FILES:
        sys.stderr.write(f"usage: python -m neural_reloc.ros.params [{' | '.join(PARAMETER_FILES)}]\n")
        return 2
    sys.stdout.write(render_yaml(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "MAP_BUILDER_NAME",
    "NODE_NAME",
    "PARAMETER_FILES",
    "PARAMETER_FILE_KEYS",
    "ParamSpec",
    "check_value",
    "config_from_node",
    "config_from_values",
    "declare_parameters",
    "descriptor_of",
    "method_overrides_from_node",
    "method_parameter_specs",
    "methods_with_settings",
    "node_parameter_specs",
    "parameter_specs",
    "render_yaml",
    "to_dict",
]
