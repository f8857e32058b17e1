"""Build a map: ``ros2 launch neural_reloc build_map.launch.py data:=DATASET out:=MAP``
or ``bag:=BAG pose_topic:=/camera_pose out:=MAP``.

Starts ``map_builder`` (the same code path as ``neural-reloc build-map``), which reports
progress on ~/progress and in its log and exits when the map is written.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("neural_reloc"), "config", "build_map.yaml"])
    arguments = [
        DeclareLaunchArgument("out", description="map directory to write"),
        DeclareLaunchArgument("data", default_value="", description="posed dataset directory (or use bag)"),
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 to build from (or use data)"),
        DeclareLaunchArgument("method", default_value="crossfire", description="map-building method"),
        DeclareLaunchArgument("config", default_value="", description="YAML method config (build-map --config)"),
        DeclareLaunchArgument("steps", default_value="0", description="training steps (0: the config's)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu or cuda[:N]"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="bag: image topic"),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="/camera/camera_info", description="bag: CameraInfo topic"
        ),
        DeclareLaunchArgument("pose_topic", default_value="", description="bag: camera pose topic"),
        DeclareLaunchArgument("tf_parent", default_value="", description="bag: camera pose as TF parent -> child"),
        DeclareLaunchArgument("tf_child", default_value="", description="bag: the child frame of that TF pair"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameter file"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
    ]
    node = Node(
        package="neural_reloc",
        executable="map_builder",
        name="map_builder",
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "out": LaunchConfiguration("out"),
                "data": LaunchConfiguration("data"),
                "bag": LaunchConfiguration("bag"),
                "method": LaunchConfiguration("method"),
                "config_file": LaunchConfiguration("config"),
                "steps": ParameterValue(LaunchConfiguration("steps"), value_type=int),
                "device": LaunchConfiguration("device"),
                "image_topic": LaunchConfiguration("image_topic"),
                "camera_info_topic": LaunchConfiguration("camera_info_topic"),
                "pose_topic": LaunchConfiguration("pose_topic"),
                "tf_parent": LaunchConfiguration("tf_parent"),
                "tf_child": LaunchConfiguration("tf_child"),
            },
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*arguments, node])
