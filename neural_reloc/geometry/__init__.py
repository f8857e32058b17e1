"""ROS-free geometry: camera models, rigid transforms and the frame conventions."""

from .camera import Camera, undistort_image
from .se3 import (
    check_pose,
    interpolate_pose,
    invert_pose,
    make_pose,
    perturb_pose,
    pose_error,
    quat_xyzw_from_rotation,
    rotation_from_quat_xyzw,
    rotation_from_rotvec,
    rotvec_from_rotation,
)

__all__ = [
    "Camera",
    "undistort_image",
    "check_pose",
    "interpolate_pose",
    "invert_pose",
    "make_pose",
    "perturb_pose",
    "pose_error",
    "quat_xyzw_from_rotation",
    "rotation_from_quat_xyzw",
    "rotation_from_rotvec",
    "rotvec_from_rotation",
]
