"""Procedural scenes with exact ground truth (RGB, depth, poses), rendered analytically.

* :mod:`.textured`: the textured loop, textured everywhere and queried between its own
  training frames: the base of fast unit tests (:func:`generate_procedural_scene`).
* :mod:`.room`: furnished rooms like real ones (plain painted walls, furniture,
  shelves, posters, a window, occlusions), a mapping walk and a separate query walk
  off it, dense and sparse (:func:`generate_room_scene`): the realistic test bed.

Both write instant-ngp / nerfstudio ``transforms.json`` datasets (:mod:`.dataset`);
:func:`render_procedural_view` renders any scene from any pose (the ground truth of
tests and benchmarks). Shared pieces: :mod:`.primitives` (geometry), :mod:`.textures`
(painter and atlas), :mod:`.render` (ray casting), :mod:`.style` (camera, textures and
lighting settings).
"""

from .dataset import depth_to_png_mm
from .render import render_procedural_view
from .scene import ProceduralScene
from .textured import ProceduralSceneConfig, build_scene, generate_procedural_scene

__all__ = [
    "ProceduralScene",
    "ProceduralSceneConfig",
    "build_scene",
    "depth_to_png_mm",
    "generate_procedural_scene",
    "render_procedural_view",
]
