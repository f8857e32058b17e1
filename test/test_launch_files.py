"""Static checks of launch/*.launch.py (``launch``/``launch_ros`` are not installable here).

Each launch file must parse, declare the arguments the issue asks for, use only declared
arguments, start executables that exist in nodes/ (executable, with a shebang), load
parameter files that exist in config/ and whose top-level key is the node's name, and
set only parameters the node declares. The nodes themselves are tested as processes
with the same parameter files (test_relocalization_node.py).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import yaml

from neural_reloc.ros import params
from neural_reloc.ros.config import MapBuilderConfig, NodeConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH = {
    "relocalize.launch.py": {
        "required_args": {"map", "method", "image_topic", "camera_info_topic", "nav2", "params_file", "use_sim_time", "log_level"},
        "node": ("relocalization_node", NodeConfig),
    },
    "build_map.launch.py": {
        "required_args": {"out", "data", "bag", "method", "params_file", "log_level"},
        "node": ("map_builder", MapBuilderConfig),
    },
}
#: Parameters every rclpy node declares itself.
BUILTIN_PARAMETERS = {"use_sim_time"}


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class LaunchFile:
    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.calls = [n for n in ast.walk(self.tree) if isinstance(n, ast.Call)]

    def of(self, name: str) -> list[ast.Call]:
        return [c for c in self.calls if _call_name(c) == name]

    def declared(self) -> dict[str, ast.Call]:
        out = {}
        for c in self.of("DeclareLaunchArgument"):
            name = _str(c.args[0]) if c.args else _str(_kw(c, "name"))
            assert name, f"{self.path.name}: DeclareLaunchArgument without a literal name (line {c.lineno})"
            assert name not in out, f"{self.path.name}: argument {name!r} declared twice"
            out[name] = c
        return out


@pytest.fixture(params=sorted(LAUNCH))
def launch_file(request):
    path = REPO_ROOT / "launch" / request.param
    assert path.is_file(), path
    return request.param, LaunchFile(path)


def test_parses_and_defines_generate_launch_description(launch_file):
    name, lf = launch_file
    funcs = [n.name for n in lf.tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs, name
    modules = {n.module.split(".")[0] for n in ast.walk(lf.tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name.split(".")[0] for n in ast.walk(lf.tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules == {"launch", "launch_ros"}, f"{name}: keep launch files thin (imports {modules})"


def test_arguments_are_declared_documented_and_used(launch_file):
    name, lf = launch_file
    declared = lf.declared()
    missing = LAUNCH[name]["required_args"] - set(declared)
    assert not missing, f"{name}: missing launch arguments {sorted(missing)}"
    for arg, call in declared.items():
        assert _str(_kw(call, "description")), f"{name}: argument {arg!r} has no description"
    used = {_str(c.args[0]) for c in lf.of("LaunchConfiguration")}
    assert used - set(declared) == set(), f"{name}: LaunchConfiguration of undeclared {sorted(used - set(declared))}"
    assert set(declared) - used == set(), f"{name}: declared but unused {sorted(set(declared) - used)}"


def test_nodes_executables_parameter_files_and_parameters_exist(launch_file):
    name, lf = launch_file
    expected_node, cfg_cls = LAUNCH[name]["node"]
    nodes = lf.of("Node")
    assert len(nodes) == 1, f"{name}: one node per launch file"
    node = nodes[0]
    assert _str(_kw(node, "package")) == "neural_reloc"
    executable = _str(_kw(node, "executable"))
    exe = REPO_ROOT / "nodes" / executable
    assert exe.is_file() and os.access(exe, os.X_OK), f"{name}: executable {exe} missing or not executable"
    assert exe.read_text().startswith("#!/usr/bin/env python3\n"), f"{exe}: needs a python3 shebang"
    ast.parse(exe.read_text())
    node_name = _str(_kw(node, "name"))
    assert node_name == expected_node

    # Parameter files named in the launch file (PathJoinSubstitution([..., "config", "x.yaml"]))
    files = []
    for call in lf.of("PathJoinSubstitution"):
        parts = [_str(e) for e in call.args[0].elts if _str(e) is not None]
        assert parts and parts[0] in ("config", "launch"), f"{name}: unexpected path {parts}"
        files.append(REPO_ROOT.joinpath(*parts))
    assert files, f"{name}: no default parameter file"
    for f in files:
        assert f.is_file(), f"{name}: {f} does not exist"
        if f.suffix == ".yaml":
            data = yaml.safe_load(f.read_text())
            assert list(data) == [node_name], f"{f}: top-level key must be the node name {node_name!r}"

    # Literal parameter names in the node's parameters dict must be declared by the node.
    declared = {s.name for s in params.parameter_specs(cfg_cls())} | BUILTIN_PARAMETERS
    dicts = [d for d in _kw(node, "parameters").elts if isinstance(d, ast.Dict)]
    assert dicts
    for d in dicts:
        for key in d.keys:
            assert _str(key) in declared, f"{name}: parameter {_str(key)!r} is not declared by {node_name}"
    # Typed parameters go through ParameterValue with the declared type.
    kinds = {s.name: s.kind for s in params.parameter_specs(cfg_cls())} | {"use_sim_time": "bool"}
    for d in dicts:
        for key, value in zip(d.keys, d.values):
            kind = kinds[_str(key)]
            if kind in ("bool", "int", "float"):
                assert isinstance(value, ast.Call) and _call_name(value) == "ParameterValue", (
                    f"{name}: {_str(key)} ({kind}) must be a ParameterValue with value_type={kind}"
                )
                assert ast.unparse(_kw(value, "value_type")) == kind
            else:
                assert kind == "str", f"{name}: {_str(key)} is a {kind}"


def test_launch_defaults_match_the_parameter_file():
    """A launch argument default that overrides a YAML value must not differ from it."""
    lf = LaunchFile(REPO_ROOT / "launch" / "relocalize.launch.py")
    declared = lf.declared()
    yaml_values = yaml.safe_load((REPO_ROOT / "config" / "relocalize.yaml").read_text())["relocalization_node"][
        "ros__parameters"
    ]
    for arg, param in (("image_topic", "image_topic"), ("camera_info_topic", "camera_info_topic"),
                       ("method", "method"), ("device", "device")):
        assert _str(_kw(declared[arg], "default_value")) == yaml_values[param], arg
    assert _str(_kw(declared["nav2"], "default_value")) == str(yaml_values["nav2_mode"]).lower()


def test_cmake_installs_nodes_launch_and_config():
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert '"${CMAKE_CURRENT_SOURCE_DIR}/nodes/*"' in cmake and "install(PROGRAMS" in cmake
    assert "DIRECTORY launch config" in cmake


def test_package_xml_declares_what_the_ros_layer_imports():
    """Bug 8: every ROS package the ROS layer imports is a dependency in package.xml,
    under its ROS name (Jazzy's Python TF is tf2_ros_py; tf2_ros is the C++ one)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    declared = {e.text.strip() for e in root if e.tag in ("depend", "exec_depend")}
    ros_names = {"tf2_ros": "tf2_ros_py"}  # Python module -> ROS package, where they differ
    known = {"rclpy", "tf2_ros", "cv_bridge", "ament_index_python", "message_filters"}
    imported: dict[str, str] = {}
    files = [*(REPO_ROOT / "neural_reloc" / "ros").glob("*.py"), *(REPO_ROOT / "nodes").iterdir(),
             *(REPO_ROOT / "launch").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in known or top.endswith(("_msgs", "_srvs", "_interfaces")):
                    imported[ros_names.get(top, top)] = path.name
    missing = {pkg: where for pkg, where in imported.items() if pkg not in declared}
    assert not missing, f"package.xml lacks {missing} (package: first file importing it)"
    assert "tf2_ros" not in declared, "tf2_ros is the C++ package; the Python TF is tf2_ros_py"
