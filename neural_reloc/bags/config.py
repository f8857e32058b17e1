"""Topic names and frame ids that bag writer, bag reader and evaluator share.

The defaults are what ``neural-reloc bag-from-dataset`` writes, so that ``eval-bag``
reads such a bag without options. Frames follow REP-105 (``map`` -> ``odom`` ->
``base_link``) and REP-103 (the camera's *optical* frame: x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BagTopics:
    #: sensor_msgs/Image (written as rgb8; read: rgb8/bgr8/rgba8/bgra8/mono8, or a
    #: sensor_msgs/CompressedImage topic)
    image: str = "/camera/image_raw"
    #: sensor_msgs/CameraInfo of the images (plumb_bob)
    camera_info: str = "/camera/camera_info"
    #: ground truth: geometry_msgs/PoseStamped, the pose of the camera optical frame in
    #: ``map`` at each image stamp (eval-bag also reads PoseWithCovarianceStamped,
    #: TransformStamped and nav_msgs/Odometry)
    ground_truth: str = "/ground_truth/camera_pose"
    #: tf2_msgs/TFMessage: odom->base_link (drifting odometry), map->ground-truth camera
    tf: str = "/tf"
    #: tf2_msgs/TFMessage, transient-local: base_link->camera optical frame
    tf_static: str = "/tf_static"


@dataclass
class BagFrameIds:
    map: str = "map"
    odom: str = "odom"
    base: str = "base_link"
    #: frame_id of images and camera infos
    camera_optical: str = "camera_optical_frame"
    #: child frame of the ground-truth TF map -> this (the true camera optical frame);
    #: a separate frame so that the tree map -> odom -> base_link stays a tree
    ground_truth_camera: str = "gt_camera_optical_frame"
