"""Posed image datasets: one type, many formats."""

from .loaders import (
    detect_format,
    load_cambridge,
    load_colmap,
    load_dataset,
    load_llff,
    load_rosbag2,
    load_seven_scenes,
    load_transforms_json,
)
from .posed_images import DatasetError, PosedImages

__all__ = [
    "DatasetError",
    "PosedImages",
    "detect_format",
    "load_cambridge",
    "load_colmap",
    "load_dataset",
    "load_llff",
    "load_rosbag2",
    "load_seven_scenes",
    "load_transforms_json",
]
