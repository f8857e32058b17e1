"""neural_reloc: camera relocalization against neural maps (ROS-free core)."""

# One import name, two halves: this library, and the `neural_reloc.msg` package that
# colcon/rosidl generates from msg/ into install/. In a ROS install both land in one
# directory; in the dev environment the source tree comes first on sys.path and the
# colcon install space after it, so let the package span every `neural_reloc`
# directory on sys.path (first one wins per module). Pure stdlib: needs no ROS.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
