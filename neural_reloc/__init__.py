"""neural_reloc: camera relocalization against neural maps (ROS-free core)."""

__version__ = "0.1.0"
