"""ROS parameters generated from the config dataclasses, so YAML == dataclass defaults.

:func:`parameter_specs` flattens a config dataclass (``NodeConfig`` with its nested
``tracking`` and ``localization.pnp`` ...) into dotted parameter names with type,
default, description, range, choices and read-only flag. Descriptions come from the
field metadata of :class:`~neural_reloc.ros.config.NodeConfig` and, for the core's
dataclasses (which stay ROS-free), from the comment on or above each field in their
source, completed by :data:`EXTRA_DESCRIPTIONS`; ranges of core fields are in
:data:`CORE_RANGES`. Everything here but :func:`declare_parameters` and
:func:`config_from_node` is ROS-free.

``python -m neural_reloc.ros.params`` prints the parameter file
(config/relocalize.yaml is that output; test/test_ros_params.py checks they agree).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import math
import sys
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..config_io import from_dict, to_dict
from .config import READ_ONLY_SECTIONS, MapBuilderConfig, NodeConfig

NODE_NAME = "relocalization_node"
MAP_BUILDER_NAME = "map_builder"
#: Parameter files: node name -> (config dataclass, file under config/).
PARAMETER_FILES = {
    NODE_NAME: (NodeConfig, "relocalize.yaml"),
    MAP_BUILDER_NAME: (MapBuilderConfig, "build_map.yaml"),
}

#: Descriptions of core config fields that have no comment of their own in their
#: source (or share one with their neighbours); these take precedence over comments.
EXTRA_DESCRIPTIONS = {
    "tracking.accept_min_inliers": "A result needs at least this many PnP inliers to become the fix "
    "(and, in Nav2 mode, to be sent to Nav2).",
    "tracking.accept_min_inlier_ratio": "A result needs at least this inlier ratio to become the fix.",
    "tracking.accept_max_position_std_m": "A result needs a position standard deviation (largest axis, "
    "from its covariance) of at most this many metres to become the fix.",
    "tracking.accept_max_yaw_std_deg": "A result needs a yaw standard deviation of at most this many "
    "degrees to become the fix.",
    "localization.refine_margin": "Coarse-to-fine matching: a coarse match is refined to the best "
    "full-resolution query cell within its block +- this many cells.",
    "localization.match_short_side": "Short side of the matching resolution (see match_long_side).",
    "localization.max_iterations": "Render -> match -> PnP rounds at most per frame.",
    "localization.converged_rotation_deg": "Stop iterating when the pose rotated less than this (degrees) "
    "and moved less than converged_translation_rel.",
    "localization.min_matches": "Fewer 2D-3D matches than this: the frame fails.",
    "localization.min_inliers": "Fewer PnP inliers than this: the frame fails.",
    "localization.min_inlier_ratio": "A frame is localized only if a descriptor round's PnP reaches this inlier ratio; otherwise it fails as unsure.",
    "localization.max_prior_rotation_deg": "A result rotated further than this from its prior is implausible (degrees).",
}

_PROBABILITY = (0.0, 1.0)
_NONNEG = (0.0, 1e9)
#: Ranges of core config fields (node fields carry theirs in their metadata).
CORE_RANGES: dict[str, tuple] = {
    "tracking.lost_after_failures": (1, 1_000_000),
    "tracking.max_fix_age_s": (0.0, 1e6),
    "tracking.accept_min_inliers": (0, 1_000_000),
    "tracking.accept_min_inlier_ratio": _PROBABILITY,
    "tracking.accept_max_position_std_m": _NONNEG,
    "tracking.accept_max_yaw_std_deg": (0.0, 180.0),
    "localization.match_long_side": (8, 4096),
    "localization.match_short_side": (8, 4096),
    "localization.min_similarity": (-1.0, 1.0),
    "localization.render_stride": (1, 64),
    "localization.early_render_stride": (0, 64),
    "localization.guided_radius_cells": (0, 4096),
    "localization.render_samples": (1, 1024),
    "localization.render_head_samples": (0, 1024),
    "localization.render_coarse_samples": (0, 4096),
    "localization.max_iterations": (1, 100),
    "localization.converged_translation_rel": _NONNEG,
    "localization.converged_rotation_deg": (0.0, 180.0),
    "localization.min_matches": (0, 1_000_000),
    "localization.min_inliers": (0, 1_000_000),
    "localization.min_inlier_ratio": _PROBABILITY,
    "localization.start_min_inlier_ratio": _PROBABILITY,
    "localization.max_prior_translation_rel": _NONNEG,
    "localization.max_prior_rotation_deg": (0.0, 180.0),
    "localization.retrieval_long_side": (8, 4096),
    "localization.pnp.reprojection_threshold_px": (1e-3, 1e3),
    "localization.pnp.max_iterations": (1, 10_000_000),
    "localization.pnp.min_iterations": (0, 10_000_000),
    "localization.pnp.success_probability": _PROBABILITY,
    "localization.pnp.dyn_num_trials_mult": (0.0, 1e3),
    "localization.pnp.refine_loss_scale_px": (1e-6, 1e3),
    "localization.pnp.refine_max_iterations": (0, 100_000),
    "localization.pnp.seed": (0, 2**31 - 1),
    "localization.pnp.min_points": (4, 1_000_000),
    "localization.pnp.max_ransac_points": (0, 1_000_000),
}


def _core_choices() -> dict[str, tuple[str, ...]]:
    from ..device import PRECISIONS
    from ..geometry import pnp

    losses = getattr(pnp, "POSELIB_LOSSES", None)
    choices = {"localization.cnn_precision": PRECISIONS}
    if losses:
        choices["localization.pnp.refine_loss"] = tuple(losses)
    return choices


@dataclass(frozen=True)
class ParamSpec:
    name: str  # dotted, e.g. "localization.pnp.seed"
    kind: str  # bool, int, float, str, float_list
    default: Any
    description: str
    range: tuple | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False


# ------------------------------------------------------------------ descriptions
@cache
def field_comments(cls: type) -> dict[str, str]:
    """The comment of each dataclass field in ``cls``'s source: the one at the end of
    its line, else the block of comment lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    out: dict[str, str] = {}
    body = ast.parse(source).body[0].body
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = comments.get(node.end_lineno) if node.end_lineno in code_lines else None
        if trailing:
            out[node.target.id] = trailing
            continue
        block = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            block.insert(0, comments[line])
            line -= 1
        if block:
            out[node.target.id] = " ".join(block)
    return out


def _sentence(text: str) -> str:
    """A source comment as a description: capitalized, ending with a full stop."""
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


def parameter_specs(cfg: Any | None = None) -> list[ParamSpec]:
    """Every parameter of ``cfg`` (default: ``NodeConfig()``), dotted names in field order."""
    cfg = NodeConfig() if cfg is None else cfg
    choices = _core_choices()
    specs: list[ParamSpec] = []

    def walk(obj: Any, prefix: str, read_only_section: bool) -> None:
        hints = typing.get_type_hints(type(obj))
        comments = field_comments(type(obj))
        for f in dataclasses.fields(obj):
            name = prefix + f.name
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, name + ".", read_only_section or name in READ_ONLY_SECTIONS)
                continue
            meta = f.metadata
            description = _sentence(
                meta.get("description") or EXTRA_DESCRIPTIONS.get(name) or comments.get(f.name, "")
            )
            specs.append(
                ParamSpec(
                    name=name,
                    kind=_kind(hints[f.name], value, name),
                    default=list(value) if isinstance(value, (list, tuple)) else value,
                    description=description,
                    range=meta.get("range", CORE_RANGES.get(name)),
                    choices=meta.get("choices", choices.get(name)),
                    read_only=bool(meta.get("read_only", False)) or read_only_section,
                )
            )

    walk(cfg, "", bool(getattr(cfg, "ALL_READ_ONLY", False)))
    return specs


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
    if spec.kind == "float_list" and len(list(value)) != len(spec.default):
        return f"{spec.name} must have {len(spec.default)} numbers, got {list(value)}"
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
    """The parameter file of a node (see PARAMETER_FILES), descriptions as comments."""
    cls, filename = PARAMETER_FILES[node_name]
    specs = parameter_specs(cls())
    lines = [
        f"# Parameters of the neural_reloc {node_name} node (ROS 2 parameter file).",
        f"# Generated from neural_reloc/ros/config.py ({cls.__name__}) and the core configs",
        f"# it nests: python -m neural_reloc.ros.params {node_name} > config/{filename}",
        "# test/test_ros_params.py checks that this file equals the dataclass defaults.",
        "# Read-only parameters (marked [read-only]) can only be set at startup.",
        f"{node_name}:",
        "  ros__parameters:",
    ]
    open_sections: list[str] = []
    for spec in specs:
        parts = spec.name.split(".")
        sections, key = parts[:-1], parts[-1]
        common = 0
        while common < min(len(sections), len(open_sections)) and sections[common] == open_sections[common]:
            common += 1
        for depth in range(common, len(sections)):
            lines.append("    " + "  " * depth + f"{sections[depth]}:")
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
            lines.append(f"{indent}# {text}")
        lines.append(f"{indent}{key}: {_yaml_scalar(spec.kind, spec.default)}")
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

    specs = parameter_specs() if specs is None else specs
    for spec in specs:
        try:
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
    """The node's current config (``changed``: values about to be set, by name)."""
    values = {s.name: node.get_parameter(s.name).value for s in specs}
    values.update(changed or {})
    return config_from_values(values, cls)


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
    "ParamSpec",
    "check_value",
    "config_from_node",
    "config_from_values",
    "declare_parameters",
    "descriptor_of",
    "field_comments",
    "parameter_specs",
    "render_yaml",
    "to_dict",
]
