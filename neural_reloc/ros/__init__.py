"""The thin ROS 2 layer: nodes convert messages, hold parameters and call the ROS-free core.

ROS-free modules (importable without rclpy): :mod:`.config` (NodeConfig),
:mod:`.params` (parameter specs and the YAML file; rclpy only in its declare/read
functions), :mod:`.tf_buffer` (the /tf listener and broadcaster around the ROS-free
:mod:`neural_reloc.geometry.tf_tree`; rclpy only inside them), :mod:`.logic`
(per-frame decisions and statistics). The others need rclpy and the message packages:
:mod:`.conversions`, :mod:`.relocalization_node`, :mod:`.map_builder`.
"""
