"""Dataset loaders: one format per module, all returning :class:`PosedImages`.

ROS-free; nothing here decodes an image (sizes come from file headers when needed),
except the rosbag2 loader, which unpacks a bag's image messages into PNG files.
"""

from .auto import detect_format, load_dataset
from .cambridge import load_cambridge
from .colmap import load_colmap
from .llff import load_llff
from .rosbag2 import load_rosbag2
from .seven_scenes import load_seven_scenes
from .transforms_json import load_transforms_json

__all__ = [
    "detect_format",
    "load_cambridge",
    "load_colmap",
    "load_dataset",
    "load_llff",
    "load_rosbag2",
    "load_seven_scenes",
    "load_transforms_json",
]
