"""Checks of launch/*.launch.py (``launch``/``launch_ros`` are not installable here).

Statically: each launch file must parse, declare the arguments the issue asks for, use
only declared arguments, start executables that exist in nodes/ (executable, with a
shebang), load parameter files that exist in config/ (keyed by the node's name, or
``/**``), and set only parameters the node declares. Run: relocalize.launch.py is
executed by test/launch_stub.py (launch's semantics for the few actions it uses) and
the node it describes is started and checked over DDS. The nodes themselves are tested
as processes with the same parameter files (test_relocalization_node.py).
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from neural_reloc.ros import params
from neural_reloc.ros.config import MapBuilderConfig, NodeConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH = {
    "relocalize.launch.py": {
        "required_args": {"map", "method", "image_topic", "camera_info_topic", "nav2", "params_file", "use_sim_time",
                          "log_level", "namespace", "use_respawn", "use_lifecycle_manager", "autostart", "device"},
        "node": ("relocalization_node", NodeConfig),
    },
    "build_map.launch.py": {
        "required_args": {"out", "data", "bag", "method", "params_file", "log_level"},
        "node": ("map_builder", MapBuilderConfig),
    },
}
#: Parameters every rclpy node declares itself.
BUILTIN_PARAMETERS = {"use_sim_time"}
#: Nodes of other packages a launch file may start (optional, e.g. Nav2's).
OTHER_NODES = {("nav2_lifecycle_manager", "lifecycle_manager")}


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

    def parameter_arguments(self) -> dict[str, tuple[str, str]]:
        """``PARAMETER_ARGUMENTS`` (launch argument -> (parameter, kind)), if defined."""
        for n in self.tree.body:
            if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "PARAMETER_ARGUMENTS" for t in n.targets):
                return ast.literal_eval(n.value)
        return {}


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
    used = {_str(c.args[0]) for c in lf.of("LaunchConfiguration")} - {None} | set(lf.parameter_arguments())
    assert used - set(declared) == set(), f"{name}: LaunchConfiguration of undeclared {sorted(used - set(declared))}"
    assert set(declared) - used == set(), f"{name}: declared but unused {sorted(set(declared) - used)}"


def test_nodes_executables_parameter_files_and_parameters_exist(launch_file):
    name, lf = launch_file
    expected_node, cfg_cls = LAUNCH[name]["node"]
    nodes = [n for n in lf.of("Node") if _str(_kw(n, "package")) == "neural_reloc"]
    assert len(nodes) == 1, f"{name}: one node of ours per launch file"
    others = {(_str(_kw(n, "package")), _str(_kw(n, "executable"))) for n in lf.of("Node")} - {
        ("neural_reloc", _str(_kw(nodes[0], "executable")))}
    assert others <= OTHER_NODES, f"{name}: starts {others}"
    node = nodes[0]
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
            key = params.PARAMETER_FILE_KEYS[node_name]
            assert list(data) == [key], f"{f}: top-level key must be {key!r}"

    # Parameters set from launch arguments must be declared by the node, with their kind.
    declared = {s.name for s in params.parameter_specs(cfg_cls())} | BUILTIN_PARAMETERS
    kinds = {s.name: s.kind for s in params.parameter_specs(cfg_cls())} | {"use_sim_time": "bool"}
    for arg, (param, kind) in lf.parameter_arguments().items():
        assert param in declared, f"{name}: argument {arg} sets {param!r}, which {node_name} does not declare"
        assert kinds[param] == kind, f"{name}: {param} is a {kinds[param]}, not a {kind}"
    # Literal parameter names in the node's parameters dict must be declared by the node.
    dicts = [d for d in _kw(node, "parameters").elts if isinstance(d, ast.Dict)]
    assert dicts or lf.parameter_arguments()
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


def test_parameter_arguments_default_to_the_parameter_file():
    """Bug 1, statically: every launch argument that sets a parameter defaults to empty,
    which sets nothing (the params_file value stays)."""
    lf = LaunchFile(REPO_ROOT / "launch" / "relocalize.launch.py")
    declared = lf.declared()
    assert {"map", "image_topic", "camera_info_topic", "device", "method", "nav2", "autostart",
            "use_sim_time"} <= set(lf.parameter_arguments())
    for arg in lf.parameter_arguments():
        assert _str(_kw(declared[arg], "default_value")) == "", f"{arg} has a default that overrides the file"


def test_cmake_installs_nodes_launch_and_config():
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert '"${CMAKE_CURRENT_SOURCE_DIR}/nodes/*"' in cmake and "install(PROGRAMS" in cmake
    assert "DIRECTORY launch config" in cmake


# ---------------------------------------------------------------------- run, not just read
def _params_file_with(tmp_path: Path, values: dict) -> Path:
    data = yaml.safe_load((REPO_ROOT / "config" / "relocalize.yaml").read_text())
    (key,) = data
    data[key]["ros__parameters"].update(values)
    path = tmp_path / "my_relocalize.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.requires_ros
def test_launch_keeps_the_params_file_values_unless_an_argument_is_given(ros_env, tmp_path):
    """Bug 1: relocalize.launch.py run (through test/launch_stub.py) with a user's
    params_file: its image_topic, camera_info_topic, device, method, nav2_mode,
    autostart and use_sim_time reach the node; only an argument given on the command
    line (here camera_info_topic) overrides the file. Checked on the node over DDS."""
    import launch_stub
    from node_helpers import Driver, node_process, stop

    in_file = {"image_topic": "/front/image_rect", "camera_info_topic": "/front/camera_info", "device": "cpu",
               "method": "classical", "nav2_mode": True, "autostart": False, "use_sim_time": True}
    params = _params_file_with(tmp_path, in_file)
    nodes = launch_stub.launch(REPO_ROOT / "launch" / "relocalize.launch.py",
                               {"map": "/no/such/map", "params_file": str(params), "camera_info_topic": "/given/info"},
                               tmp_path)
    ours = [n for n in nodes if n.executable == "relocalization_node"]
    assert len(ours) == 1, nodes
    proc = node_process(ros_env, cmd=ours[0].cmd)
    driver = Driver(int(ros_env["ROS_DOMAIN_ID"]))
    try:
        got = driver.parameters([*in_file, "map_path"], proc=proc)
    finally:
        driver.close()
        stop(proc)
    expected = {**in_file, "camera_info_topic": "/given/info", "map_path": "/no/such/map"}
    assert got == expected, {k: (got[k], v) for k, v in expected.items() if got[k] != v}


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


@pytest.mark.requires_ros
def test_launch_in_a_namespace_with_tf_remapped(oracle_map, ros_env, tmp_path):
    """Nav2 style: ``namespace:=robot1`` starts /robot1/relocalization_node, which reads
    the shipped file (keyed /**), subscribes its relative topics in the namespace and
    publishes map -> odom on /robot1/tf (the /tf remap)."""
    import launch_stub
    from node_helpers import CAMERA_FRAME, Driver, Oracle, camera_info, grey_image, node_process, publish_frame, stop
    from tf2_msgs.msg import TFMessage

    from neural_reloc.geometry.camera import Camera
    from neural_reloc.ros.conversions import transform_stamped

    (ours,) = launch_stub.launch(REPO_ROOT / "launch" / "relocalize.launch.py",
                                 {"namespace": "robot1", "map": str(oracle_map), "device": "cpu"}, tmp_path)
    assert ours.namespace == "/robot1" and not ours.respawn
    oracle = Oracle(oracle_map, tmp_path / "oracle")
    oracle.set_pose(100, np.eye(4))
    proc = node_process(oracle.env(ros_env), cmd=ours.cmd)
    d = Driver(int(ros_env["ROS_DOMAIN_ID"]), ns="/robot1", tf_in_ns=True)
    try:
        t0 = time.monotonic()
        d.spin_until(lambda: d.diagnostics_with(lambda st, v: v.get("lifecycle_state") == "active", t0), 90.0,
                     "the node to become active", proc)
        subs = {n for n, _ in d.node.get_subscriber_names_and_types_by_node("relocalization_node", "/robot1")}
        assert {"/robot1/camera/image_raw", "/robot1/camera/camera_info", "/robot1/initialpose", "/robot1/tf",
                "/robot1/tf_static"} <= subs, subs
        assert "/tf" not in subs
        camera = Camera.from_ros_k(64, 48, [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
        d.wait_for_subscribers([d.image_pub, d.info_pub], proc)
        d.tf_static_pub.publish(TFMessage(transforms=[transform_stamped(np.eye(4), "base_link", CAMERA_FRAME, 0)]))
        d.info_pub.publish(camera_info(camera))
        d.spin(0.5)
        publish_frame(d, grey_image(100), camera, time.time_ns(), np.eye(4))
        d.spin_until(lambda: d.transforms("map", "odom", t0), 10.0, "map -> odom on /robot1/tf", proc)
    finally:
        d.close()
        stop(proc)


def test_launch_under_a_lifecycle_manager():
    """``use_lifecycle_manager:=true``: a nav2_lifecycle_manager for the node, with
    bond_timeout 0 (the node has no bond), and the node's autostart off; ``use_respawn``."""
    import launch_stub

    ours, manager = launch_stub.launch(REPO_ROOT / "launch" / "relocalize.launch.py",
                                       {"use_lifecycle_manager": "true", "use_respawn": "true", "map": "/m"})
    assert ours.executable == "relocalization_node" and ours.respawn
    assert {"autostart": False, "map_path": "/m"}.items() <= ours.parameters[-1].items()
    assert (manager.package, manager.executable) == ("nav2_lifecycle_manager", "lifecycle_manager")
    assert manager.parameters == [{"autostart": True, "node_names": ["relocalization_node"], "bond_timeout": 0.0}]
    assert ["-r", "/tf:=tf"] == ours.cmd[ours.cmd.index("/tf:=tf") - 1:ours.cmd.index("/tf:=tf") + 1]
