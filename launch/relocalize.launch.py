"""Relocalization against a neural map: ``ros2 launch neural_reloc relocalize.launch.py map:=MAP``.

Starts ``relocalization_node`` with config/relocalize.yaml (or ``params_file``) and the
arguments below on top. With ``autostart:=true`` (the default here) the lifecycle node
configures and activates itself; set it to false when a lifecycle manager (e.g. Nav2's)
drives it. Remap other topics with the usual ``--ros-args -r`` on the node, or edit the
parameter file.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("neural_reloc"), "config", "relocalize.yaml"])
    arguments = [
        DeclareLaunchArgument("map", description="map bundle directory (neural-reloc build-map --out)"),
        DeclareLaunchArgument(
            "method", default_value="", description="method the map must have been built with (empty: any)"
        ),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="sensor_msgs/Image"),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="/camera/camera_info", description="sensor_msgs/CameraInfo"
        ),
        DeclareLaunchArgument(
            "nav2", default_value="false", description="publish confident fixes on /initialpose for Nav2 (AMCL)"
        ),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameter file"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="configure and activate without a lifecycle manager"
        ),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu or cuda[:N]"),
    ]
    node = Node(
        package="neural_reloc",
        executable="relocalization_node",
        name="relocalization_node",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "map_path": LaunchConfiguration("map"),
                "method": LaunchConfiguration("method"),
                "image_topic": LaunchConfiguration("image_topic"),
                "camera_info_topic": LaunchConfiguration("camera_info_topic"),
                "device": LaunchConfiguration("device"),
                "nav2_mode": ParameterValue(LaunchConfiguration("nav2"), value_type=bool),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*arguments, node])
