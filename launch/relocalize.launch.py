"""Relocalization against a neural map, in Nav2's launch style.

``ros2 launch neural_reloc relocalize.launch.py map:=MAP [namespace:=robot1] [nav2:=true]``

Parameters come from ``params_file`` (default: the package's config/relocalize.yaml,
keyed ``/**`` so that it applies in any namespace). An argument left at its empty
default sets nothing: the parameter keeps the file's value; only the arguments given on
the command line override the file. ``/tf`` and ``/tf_static`` are remapped into the
namespace (``tf``, ``tf_static``) as in Nav2's bringup; the node's topics are relative
(``camera/image_raw``, ``initialpose``, ``amcl_pose``), so they resolve in the namespace.

Lifecycle: by default the node configures and activates itself (``autostart`` in the
parameter file). ``use_lifecycle_manager:=true`` starts a ``nav2_lifecycle_manager`` for
it instead (the node's autostart off) with ``bond_timeout: 0.0``: this node does not
implement the bond heartbeat, so the manager must not wait for one. To put the node
under your own Nav2 lifecycle manager, add ``relocalization_node`` to its
``node_names`` with ``bond_timeout: 0.0`` and set ``autostart:=false`` here.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

#: Launch argument -> (node parameter, type): set on the node only when given (non-empty).
PARAMETER_ARGUMENTS = {
    "map": ("map_path", "str"),
    "method": ("method", "str"),
    "image_topic": ("image_topic", "str"),
    "camera_info_topic": ("camera_info_topic", "str"),
    "device": ("device", "str"),
    "nav2": ("nav2_mode", "bool"),
    "autostart": ("autostart", "bool"),
    "use_sim_time": ("use_sim_time", "bool"),
}


def _bool(name, text):
    value = {"true": True, "false": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"launch argument {name}:={text!r} must be true or false")
    return value


def _nodes(context):
    given = {arg: LaunchConfiguration(arg).perform(context) for arg in PARAMETER_ARGUMENTS}
    overrides = {  # a string stays a string (launch_ros would read "123" as an int)
        param: _bool(arg, given[arg]) if kind == "bool" else ParameterValue(given[arg], value_type=str)
        for arg, (param, kind) in PARAMETER_ARGUMENTS.items()
        if given[arg] != ""
    }
    managed = _bool("use_lifecycle_manager", LaunchConfiguration("use_lifecycle_manager").perform(context))
    if managed:
        overrides["autostart"] = False  # the lifecycle manager drives the node
    namespace = LaunchConfiguration("namespace").perform(context)
    remappings = [("/tf", "tf"), ("/tf_static", "tf_static")]
    log_level = ["--log-level", LaunchConfiguration("log_level").perform(context)]
    nodes = [
        Node(
            package="neural_reloc",
            executable="relocalization_node",
            name="relocalization_node",
            namespace=namespace,
            output="screen",
            respawn=_bool("use_respawn", LaunchConfiguration("use_respawn").perform(context)),
            respawn_delay=2.0,
            parameters=[LaunchConfiguration("params_file").perform(context), *([overrides] if overrides else [])],
            remappings=remappings,
            ros_arguments=log_level,
        )
    ]
    if managed:
        nodes.append(
            Node(
                package="nav2_lifecycle_manager",
                executable="lifecycle_manager",
                name="lifecycle_manager_relocalization",
                namespace=namespace,
                output="screen",
                parameters=[
                    {
                        "autostart": True,
                        "node_names": ["relocalization_node"],
                        "bond_timeout": 0.0,
                        **({"use_sim_time": overrides["use_sim_time"]} if "use_sim_time" in overrides else {}),
                    }
                ],
                ros_arguments=log_level,
            )
        )
    return nodes


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("neural_reloc"), "config", "relocalize.yaml"])
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="top-level namespace (e.g. robot1)"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameter file"),
        DeclareLaunchArgument("map", default_value="", description="map bundle directory (empty: the params_file value)"),
        DeclareLaunchArgument("method", default_value="", description="relocalization method (empty: the params_file value)"),
        DeclareLaunchArgument("image_topic", default_value="", description="sensor_msgs/Image (empty: the params_file value)"),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="", description="sensor_msgs/CameraInfo (empty: the params_file value)"
        ),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu or cuda[:N] (empty: the params_file value)"),
        DeclareLaunchArgument(
            "nav2", default_value="", description="true: beside AMCL (fixes to AMCL, no TF) (empty: the params_file value)"
        ),
        DeclareLaunchArgument(
            "autostart", default_value="", description="configure and activate by itself (empty: the params_file value)"
        ),
        DeclareLaunchArgument("use_sim_time", default_value="", description="use /clock (empty: the params_file value)"),
        DeclareLaunchArgument(
            "use_lifecycle_manager",
            default_value="false",
            description="start a nav2_lifecycle_manager (bond_timeout 0) for the node; its autostart off",
        ),
        DeclareLaunchArgument(
            "use_respawn", default_value="false", description="restart the node if it exits (after 2 s)"
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
