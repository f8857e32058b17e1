"""rosbag2 bags without ROS: write a bag from a posed dataset, read one as camera
frames (images, CameraInfo, odometry from /tf, ground truth) or as a posed dataset.

Modules: :mod:`.storage` (open a bag, iterate its raw messages) and :mod:`.salvage`
(what a cut-off file still holds); :mod:`.messages` (decode and encode messages:
images, CameraInfo, poses, TF); :mod:`.poses` (camera poses from a pose topic or a TF
pair); :mod:`.reader` (a bag as typed camera frames); :mod:`.dataset` (a bag as
posed images, the ``rosbag2`` dataset format); :mod:`.writer` (``bag-from-dataset``).
"""

from .config import BagFrameIds, BagTopics
from .dataset import BagDatasetConfig, posed_images_from_bag
from .errors import BagError, BagTruncatedError
from .poses import GroundTruthConfig, PoseSource
from .reader import BagFrame, BagFrames, BagReadConfig, read_frames
from .storage import BagReader
from .writer import (
    BagFromDatasetConfig,
    OdometryConfig,
    simulate_odometry,
    write_bag_from_dataset,
)

__all__ = [
    "BagDatasetConfig",
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
    "PoseSource",
    "posed_images_from_bag",
    "read_frames",
    "simulate_odometry",
    "write_bag_from_dataset",
]
