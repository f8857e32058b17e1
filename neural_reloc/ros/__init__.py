"""The thin ROS 2 layer: nodes convert messages, hold parameters and call the ROS-free core.

ROS-free modules (importable without rclpy): :mod:`.config` (NodeConfig),
:mod:`.params` (parameter specs and the YAML file; rclpy only in its declare/read
functions), :mod:`.tf_buffer` (the TF buffer; rclpy only in its listener and
broadcaster), :mod:`.logic` (per-frame decisions and statistics). The others need
rclpy and the message packages: :mod:`.conversions`, :mod:`.relocalization_node`,
:mod:`.map_builder`.
"""
