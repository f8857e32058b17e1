"""Runs a launch file without ``launch``/``launch_ros`` (not installable here).

A stand-in for the small part of the launch API our launch files use, with launch's
semantics: arguments given on the command line win over ``DeclareLaunchArgument``
defaults; ``OpaqueFunction`` sees the launch configurations; ``IfCondition`` /
``UnlessCondition``; a ``launch_ros`` ``Node`` becomes the command line launch_ros would
run (``-r __node:=``, ``-r __ns:=``, each parameter file then each parameter dict
written as a ``/**`` parameter file, in order, so later ones win; remappings; ROS
arguments). :func:`launch` returns those commands, for the test to start the node as
the launch file would and check it over DDS.
"""

from __future__ import annotations

import contextlib
import runpy
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


class Context:
    def __init__(self, arguments: dict[str, str]):
        self.launch_configurations = dict(arguments)

    def perform_substitution(self, sub) -> str:
        return perform(self, sub)


def perform(context: Context, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(perform(context, v) for v in value)
    return value.perform(context)


class LaunchConfiguration:
    def __init__(self, variable_name, default=None):
        self.name, self.default = variable_name, default

    def perform(self, context: Context) -> str:
        if self.name in context.launch_configurations:
            return context.launch_configurations[self.name]
        if self.default is None:
            raise KeyError(f"launch configuration {self.name!r} is not set")
        return perform(context, self.default)


class PathJoinSubstitution:
    def __init__(self, substitutions):
        self.parts = list(substitutions)

    def perform(self, context: Context) -> str:
        return str(Path(*[perform(context, p) for p in self.parts]))


class FindPackageShare:
    def __init__(self, package):
        self.package = package

    def perform(self, context: Context) -> str:
        assert perform(context, self.package) == "neural_reloc", self.package
        return str(REPO_ROOT)  # the share directory holds config/ and launch/ as the source tree


class PythonExpression:
    def __init__(self, expression):
        self.expression = expression

    def perform(self, context: Context) -> str:
        return str(eval(perform(context, self.expression)))  # noqa: S307 - launch does the same


def _truthy(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise ValueError(f"condition {text!r} is not true/false")


class IfCondition:
    def __init__(self, predicate_expression):
        self.predicate = predicate_expression

    def evaluate(self, context: Context) -> bool:
        return _truthy(perform(context, self.predicate))


class UnlessCondition(IfCondition):
    def evaluate(self, context: Context) -> bool:
        return not super().evaluate(context)


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type

    def evaluate(self, context: Context):
        text = perform(context, self.value)
        if self.value_type is str:
            return text
        value = yaml.safe_load(text) if text else text
        if self.value_type is not None and not isinstance(value, self.value_type):
            raise TypeError(f"parameter value {text!r} is not a {self.value_type.__name__}")
        return value


class DeclareLaunchArgument:
    def __init__(self, name, *, default_value=None, description="", choices=None, **kw):
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None, **kw):
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}


class GroupAction:
    def __init__(self, actions, *, condition=None, scoped=True, **kw):
        self.actions, self.condition = list(actions), condition


@dataclass
class NodeCommand:
    """A node as launch_ros would start it."""

    package: str
    executable: str
    name: str
    namespace: str
    cmd: list[str]
    respawn: bool
    parameters: list = field(default_factory=list)  # files and dicts, in order


class Node:
    def __init__(self, *, package, executable, name=None, namespace=None, parameters=None, remappings=None,
                 arguments=None, ros_arguments=None, respawn=False, respawn_delay=None, condition=None, **kw):
        self.kw = dict(package=package, executable=executable, name=name, namespace=namespace,
                       parameters=parameters or [], remappings=remappings or [], arguments=arguments or [],
                       ros_arguments=ros_arguments or [], respawn=respawn)
        self.condition = condition

    def command(self, context: Context, params_dir: Path) -> NodeCommand:
        k = self.kw
        package, executable = perform(context, k["package"]), perform(context, k["executable"])
        exe = REPO_ROOT / "nodes" / executable if package == "neural_reloc" else Path(package) / executable
        cmd = [sys.executable, str(exe)] if package == "neural_reloc" else [str(exe)]
        cmd += [perform(context, a) for a in k["arguments"]] + ["--ros-args"]
        name = perform(context, k["name"]) if k["name"] is not None else ""
        ns = perform(context, k["namespace"]) if k["namespace"] is not None else ""
        if name:
            cmd += ["-r", f"__node:={name}"]
        if ns:
            ns = ns if ns.startswith("/") else "/" + ns
            cmd += ["-r", f"__ns:={ns}"]
        parameters = []
        for i, p in enumerate(k["parameters"]):
            if isinstance(p, dict):
                values = {perform(context, key): _parameter(context, v) for key, v in p.items()}
                path = Path(params_dir) / f"{name or executable}_{i}.yaml"
                path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
                parameters.append(values)
            else:
                path = Path(perform(context, p))
                parameters.append(path)
            cmd += ["--params-file", str(path)]
        for src, dst in k["remappings"]:
            cmd += ["-r", f"{perform(context, src)}:={perform(context, dst)}"]
        cmd += [perform(context, a) for a in k["ros_arguments"]]
        respawn = k["respawn"]
        respawn = respawn if isinstance(respawn, bool) else _truthy(perform(context, respawn))
        return NodeCommand(package, executable, name, ns, cmd, respawn, parameters)


def _parameter(context: Context, value):
    if isinstance(value, ParameterValue):
        return value.evaluate(context)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and not any(hasattr(v, "perform") for v in value):
        return list(value)
    text = perform(context, value)
    loaded = yaml.safe_load(text) if text else text
    return loaded if isinstance(loaded, (bool, int, float, str)) else text


class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])


def _modules() -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    launch = module("launch", LaunchDescription=LaunchDescription)
    mods = {
        "launch": launch,
        "launch.actions": module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                 OpaqueFunction=OpaqueFunction, GroupAction=GroupAction),
        "launch.substitutions": module("launch.substitutions", LaunchConfiguration=LaunchConfiguration,
                                       PathJoinSubstitution=PathJoinSubstitution, PythonExpression=PythonExpression),
        "launch.conditions": module("launch.conditions", IfCondition=IfCondition, UnlessCondition=UnlessCondition),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=Node),
        "launch_ros.substitutions": module("launch_ros.substitutions", FindPackageShare=FindPackageShare),
        "launch_ros.descriptions": module("launch_ros.descriptions", ParameterValue=ParameterValue),
        "launch_ros.parameter_descriptions": module("launch_ros.parameter_descriptions",
                                                    ParameterValue=ParameterValue),
    }
    for name, m in mods.items():
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(mods[parent], child, m)
    return mods


@contextlib.contextmanager
def _stubbed():
    mods = _modules()
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, m in saved.items():
            if m is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = m


def launch(path: Path, arguments: dict[str, str], params_dir: Path | None = None) -> list[NodeCommand]:
    """The nodes ``path`` starts with ``arguments`` (``ros2 launch pkg file k:=v``)."""
    params_dir = Path(params_dir or tempfile.mkdtemp(prefix="launch_stub_"))
    with _stubbed():
        description = runpy.run_path(str(path))["generate_launch_description"]()
    context = Context(arguments)
    nodes: list[NodeCommand] = []

    def run(entities):
        for e in entities:
            if isinstance(e, DeclareLaunchArgument):
                if e.name not in context.launch_configurations:
                    if e.default_value is None:
                        raise ValueError(f"launch argument {e.name!r} is required")
                    context.launch_configurations[e.name] = perform(context, e.default_value)
                value = context.launch_configurations[e.name]
                if e.choices is not None and value not in e.choices:
                    raise ValueError(f"launch argument {e.name}:={value!r} is not one of {e.choices}")
            elif isinstance(e, OpaqueFunction):
                run(e.function(context, *e.args, **e.kwargs) or [])
            elif isinstance(e, GroupAction):
                if e.condition is None or e.condition.evaluate(context):
                    run(e.actions)
            elif isinstance(e, Node):
                if e.condition is None or e.condition.evaluate(context):
                    nodes.append(e.command(context, params_dir))
            else:
                raise TypeError(f"the launch stub does not know {type(e).__name__}")

    run(description.entities)
    return nodes
