"""rosbag2 bags without ROS: write a bag from a posed dataset, read one as camera
frames (images, CameraInfo, odometry from /tf, ground truth)."""

from .config import BagFrameIds, BagTopics
from .errors import BagError, BagTruncatedError
from .reader import (
    BagFrame,
    BagFrames,
    BagReadConfig,
    BagReader,
    GroundTruthConfig,
    read_frames,
)
from .writer import (
    BagFromDatasetConfig,
    OdometryConfig,
    simulate_odometry,
    write_bag_from_dataset,
)

__all__ = [
    "BagError",
    "BagFrame",
    "BagFrameIds",
    "BagFrames",
    "BagFromDatasetConfig",
    "BagReadConfig",
    "BagReader",
    "BagTopics",
    "BagTruncatedError",
    "GroundTruthConfig",
    "OdometryConfig",
    "read_frames",
    "simulate_odometry",
    "write_bag_from_dataset",
]
