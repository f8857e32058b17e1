"""A built procedural scene: geometry, texture atlas, camera and camera poses.

Every scene kind (the textured loop, the furnished rooms) builds one of these from its
config; the renderer (:mod:`.render`) and the dataset writer (:mod:`.dataset`) only
see this type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ...geometry.camera import Camera
from .primitives import Room, Tile
from .style import SceneStyle

#: Frame file names (index in the scene's pose array).
FRAME_NAME_FORMAT = "{:04d}.png"


class OutsideView(Protocol):
    """What a window shows: a colour per viewing direction (the outside is far away)."""

    def color(self, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """(..., 3) float32 linear colour in [0, 1] for world unit directions."""


@dataclass(eq=False)
class ProceduralScene:
    """Everything needed to render a procedural scene and its camera poses."""

    config: SceneStyle
    room: Room
    objects: list
    tiles: list[Tile]
    atlas: np.ndarray  # (Ha, ATLAS_WIDTH, 4) float32: albedo in [0, 1] and glass fraction
    camera: Camera
    c2w_opengl: np.ndarray  # (N, 4, 4) every frame of the dataset
    split: dict[str, list[int]] = field(default_factory=dict)
    tile_names: list[str] = field(default_factory=list)
    #: What windows show (None: the scene has no windows).
    outside: OutsideView | None = None
    #: Free-form description of the scene written into transforms.json (walks, layout).
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # per tile: first and last texel centre (x0, y0, x1, y1) in atlas coordinates
        self.tile_bounds = tuple(
            np.array(v, dtype=np.float32)
            for v in zip(*[(t.x0, t.y0, t.x0 + t.tw - 1, t.y0 + t.th - 1) for t in self.tiles])
        )

    @property
    def primitives(self) -> list:
        return [self.room, *self.objects]

    @property
    def aabb(self) -> list[list[float]]:
        return [self.room.lo.tolist(), self.room.hi.tolist()]

    def frame_names(self) -> list[str]:
        return [FRAME_NAME_FORMAT.format(i) for i in range(len(self.c2w_opengl))]

    def min_clearance(self, point: np.ndarray) -> float:
        """Distance from a point to the nearest surface (negative inside an object)."""
        return min(p.distance(point) for p in self.primitives)
