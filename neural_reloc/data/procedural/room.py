"""Furnished rooms like real ones, mapped on one walk and queried from others.

A box room (metric, z-up) with plain painted walls, a plain ceiling, a wooden,
carpeted or tiled floor, a window showing a street (:mod:`.outside`), a door, a few
pictures, and furniture along the walls (book shelves, a sofa, a sideboard with a TV,
a desk with a chair, a wardrobe, a radiator under the window, a plant, a floor lamp)
plus a coffee table on a rug inside the walk: thin legs and chairs occlude what is
behind them. Everything but the window is Lambertian (see :mod:`.render`).

Cameras: ``num_mapping_views`` on the mapping walk (the train split) and
``num_query_views`` on two query walks beside it, one inside and one outside the
mapping loop, 10-50 cm off it, at other heights and with other look directions (the
test split). :func:`generate_room_scene` writes a dense dataset (every mapping view)
and a sparse one (every ``sparse_every``-th), both with all the queries, in seconds.
Images get per-frame exposure jitter, vignetting and sensor noise, as a camera's do;
depth (``depth_file_path``) is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ...geometry.frames import opengl_c2w_from_opencv_c2w
from .dataset import stamp_ok, write_dataset
from .furniture import Layout, furnish
from .materials import paint_material
from .outside import StreetView
from .primitives import Room, Tile
from .scene import ProceduralScene
from .style import STREAM_OBJECTS, STREAM_TRAJECTORY, SceneStyle
from .textures import build_atlas
from .walks import WalkShape, walk_c2w_opencv

SCENE_NAME = "neural_reloc room"
#: Random stream of the per-frame camera effects (see style.py for the others).
STREAM_EFFECTS = 4
#: Query walks: the inside one and the outside one, each half of the queries.
QUERY_WALKS = ("inside", "outside")


@dataclass(frozen=True)
class RoomSceneConfig(SceneStyle):
    """Every tunable of a furnished room (lengths in metres, angles in degrees)."""

    width: int = 320
    height: int = 240
    #: a robot camera's field of view (phones ~65, RealSense D435 colour ~69)
    hfov_deg: float = 70.0

    # -- room: [-sx/2, sx/2] x [-sy/2, sy/2] x [0, sz], sizes drawn from these ranges
    room_size_x: tuple[float, float] = (5.6, 7.0)
    room_size_y: tuple[float, float] = (4.6, 5.8)
    room_height: tuple[float, float] = (2.5, 2.85)

    # -- the mapping walk: an ellipse this far from the walls (furniture stands in
    # between), looking across the room (yaw offset 180 from the outward direction)
    # with a slow pan
    num_mapping_views: int = 120
    walk_wall_distance_m: float = 1.45
    mapping_height_m: float = 1.45
    mapping_height_amplitude_m: float = 0.08
    mapping_yaw_offset_deg: float = 180.0
    mapping_yaw_amplitude_deg: float = 60.0
    mapping_pitch_deg: float = -10.0
    #: the sparse dataset keeps every this-many-th mapping view (10%)
    sparse_every: int = 10

    # -- the query walks: beside the mapping walk by a sideways offset in this range,
    # at another height and with other look directions
    num_query_views: int = 40
    query_offset_m: tuple[float, float] = (0.1, 0.5)
    query_height_offset_m: float = 0.18
    query_height_amplitude_m: float = 0.1
    #: yaw offset from the mapping walk's (one query walk turned left, the other right)
    query_yaw_offset_deg: float = 25.0
    query_yaw_amplitude_deg: float = 40.0
    query_pitch_deg: float = -4.0
    #: no camera is closer than this to any surface (checked)
    min_clearance_m: float = 0.45
    #: furniture keeps this much more from the walks (sampled this many times denser)
    furniture_path_margin_m: float = 0.05
    path_oversampling: int = 4
    placement_attempts: int = 400

    # -- surfaces
    wall_saturation: tuple[float, float] = (0.03, 0.14)
    wall_value: tuple[float, float] = (0.72, 0.9)
    #: probability that one wall is painted an accent colour
    accent_wall_probability: float = 0.5
    num_pictures: tuple[int, int] = (4, 8)
    picture_size_m: tuple[float, float] = (0.3, 0.9)
    plain_noise_amplitude: float = 0.012
    ceiling_saturation: float = 0.02
    ceiling_value: float = 0.9

    # -- lighting: a ceiling lamp near the centre and daylight
    ambient: float = 0.5
    sun_direction: tuple[float, float, float] = (0.4, 0.25, 1.0)
    sun_intensity: float = 0.25
    lamp_position: tuple[float, float, float] = (0.3, -0.2, 2.35)
    lamp_intensity: float = 0.55
    lamp_falloff_m: float = 2.2

    # -- camera effects, per frame
    #: std of the log exposure (auto-exposure drift)
    exposure_jitter: float = 0.03
    #: brightness drop in the image corners (1 - vignetting * r^2, r = 1 in a corner)
    vignetting: float = 0.08
    #: std of additive sensor noise, in 8-bit levels
    sensor_noise: float = 1.0


@dataclass(frozen=True)
class RoomDatasets:
    """Where :func:`generate_room_scene` wrote the two variants."""

    dense: Path
    sparse: Path


def room_box(config: RoomSceneConfig) -> Room:
    rng = np.random.default_rng([config.seed, STREAM_OBJECTS, 0])
    sx, sy, sz = (float(rng.uniform(*r)) for r in (config.room_size_x, config.room_size_y, config.room_height))
    return Room(lo=np.array([-sx / 2, -sy / 2, 0.0]), hi=np.array([sx / 2, sy / 2, sz]))


def walk_shapes(config: RoomSceneConfig, room: Room) -> dict[str, WalkShape]:
    """The mapping walk and the query walks of a room."""
    rng = np.random.default_rng([config.seed, STREAM_TRAJECTORY, 0])
    half = (room.hi - room.lo) / 2
    mapping = WalkShape(
        center_xy=(0.0, 0.0),
        radius_x=float(half[0] - config.walk_wall_distance_m),
        radius_y=float(half[1] - config.walk_wall_distance_m),
        height_m=config.mapping_height_m,
        height_amplitude_m=config.mapping_height_amplitude_m,
        yaw_offset_deg=config.mapping_yaw_offset_deg,
        yaw_amplitude_deg=config.mapping_yaw_amplitude_deg,
        pitch_deg=config.mapping_pitch_deg,
        start_angle_deg=float(rng.uniform(0, 360)),
    )
    lo, hi = config.query_offset_m
    mid, amp = (lo + hi) / 2, (hi - lo) / 2
    shapes = {"mapping": mapping}
    for k, side in enumerate(QUERY_WALKS):
        sign = -1.0 if side == "inside" else 1.0
        shapes[side] = replace(
            mapping,
            offset_m=sign * mid,
            offset_amplitude_m=amp,
            offset_cycles=3,
            height_m=config.mapping_height_m + (config.query_height_offset_m if k == 0 else -config.query_height_offset_m),
            height_amplitude_m=config.query_height_amplitude_m,
            height_cycles=3,
            yaw_offset_deg=config.mapping_yaw_offset_deg + config.query_yaw_offset_deg * (1 if k == 0 else -1),
            yaw_amplitude_deg=config.query_yaw_amplitude_deg,
            yaw_cycles=3,
            pitch_deg=config.query_pitch_deg,
            start_angle_deg=mapping.start_angle_deg + float(rng.uniform(0, 360)),
        )
    return shapes


def _walk_poses(config: RoomSceneConfig, shapes: dict[str, WalkShape], oversample: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([config.seed, STREAM_TRAJECTORY, 1])
    phases = {name: rng.uniform(0.0, 2 * math.pi, 6) for name in shapes}
    for name in QUERY_WALKS:  # the same loop (radius wobble), offset sideways
        phases[name][0] = phases["mapping"][0]
    n_query = config.num_query_views // len(QUERY_WALKS)
    counts = {"mapping": config.num_mapping_views, "inside": n_query, "outside": config.num_query_views - n_query}
    return {name: walk_c2w_opencv(shapes[name], counts[name] * oversample, phases[name]) for name in shapes}


def build_room_scene(config: RoomSceneConfig = RoomSceneConfig()) -> ProceduralScene:
    """The room, its furniture, textures and every camera pose (deterministic from
    the seed). Frames: the mapping views first (train), then the queries (test)."""
    _validate(config)
    room = room_box(config)
    shapes = walk_shapes(config, room)
    poses = _walk_poses(config, shapes)
    dense = _walk_poses(config, shapes, config.path_oversampling)
    path = np.concatenate([P[:, :3, 3] for P in dense.values()])
    layout: Layout = furnish(config, room, path)

    c2w_opencv = np.concatenate([poses["mapping"], *(poses[w] for w in QUERY_WALKS)])
    for i, T in enumerate(c2w_opencv):
        for prim in (room, *layout.objects):
            d = prim.distance(T[:3, 3])
            if d < config.min_clearance_m:
                raise ValueError(
                    f"room scene (seed {config.seed}): camera {i} at {np.round(T[:3, 3], 3).tolist()} is "
                    f"{d:.3f} m from {prim.name} (< min_clearance_m={config.min_clearance_m})"
                )

    tiles, names, materials = [], [], []
    for prim in (room, *layout.objects):
        prim.tile_base = len(tiles)
        for k, (w, h) in enumerate(prim.tile_sizes()):
            tiles.append(Tile(width_m=float(w), height_m=float(h)))
            names.append(f"{prim.name}/{k}")
            materials.append(layout.materials[prim.name][k])
    atlas = build_atlas(config, tiles, lambda i, p: paint_material(p, materials[i]))

    m = config.num_mapping_views
    n = len(c2w_opencv)
    return ProceduralScene(
        config=config,
        room=room,
        objects=layout.objects,
        tiles=tiles,
        atlas=atlas,
        camera=config.camera(),
        c2w_opengl=np.stack([opengl_c2w_from_opencv_c2w(T) for T in c2w_opencv]),
        split={"train": list(range(m)), "test": list(range(m, n))},
        tile_names=names,
        outside=StreetView.random(np.random.default_rng([config.seed, STREAM_OBJECTS, 9])),
        info={
            "kind": "furnished room",
            "room_size_m": (room.hi - room.lo).round(3).tolist(),
            "furniture": sorted({o.name.split("/")[0] for o in layout.objects}),
            "walks": {"mapping": list(range(m)), **_query_ranges(config, m)},
        },
    )


def _query_ranges(config: RoomSceneConfig, start: int) -> dict[str, list[int]]:
    n_query = config.num_query_views // len(QUERY_WALKS)
    a = start + n_query
    return {"inside": list(range(start, a)), "outside": list(range(a, start + config.num_query_views))}


def _validate(config: RoomSceneConfig) -> None:
    problems = []
    if config.width <= 0 or config.height <= 0:
        problems.append(f"image size {config.width}x{config.height}")
    if config.num_mapping_views < 2 or config.num_query_views < len(QUERY_WALKS):
        problems.append("need >= 2 mapping views and >= 2 queries")
    if config.sparse_every < 1:
        problems.append(f"sparse_every={config.sparse_every} (>= 1)")
    lo, hi = config.query_offset_m
    if not 0 <= lo <= hi:
        problems.append(f"query_offset_m={config.query_offset_m}")
    if problems:
        raise ValueError("invalid RoomSceneConfig: " + "; ".join(problems))


def camera_effects(config: RoomSceneConfig, index: int, rgb: np.ndarray) -> np.ndarray:
    """Frame ``index``'s exposure, vignetting and sensor noise applied to a render."""
    rng = np.random.default_rng([config.seed, STREAM_EFFECTS, index])
    h, w = rgb.shape[:2]
    gain = math.exp(rng.normal(0.0, config.exposure_jitter)) if config.exposure_jitter > 0 else 1.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
    shade = gain * (1.0 - config.vignetting * r2 / 2.0)
    out = rgb.astype(np.float32) * shade[..., None]
    if config.sensor_noise > 0:
        out += rng.normal(0.0, config.sensor_noise, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def generate_room_scene(
    out_dir, config: RoomSceneConfig = RoomSceneConfig(), *, workers: int | None = None, force: bool = False
) -> RoomDatasets:
    """Write the room's dense dataset to ``out_dir/dense`` and its sparse one to
    ``out_dir/sparse`` (each a transforms.json folder with the train = mapping views,
    test = queries split). Reruns with the same config return at once."""
    out_dir = Path(out_dir)
    dense_dir, sparse_dir = out_dir / "dense", out_dir / "sparse"
    h = config.config_hash()
    if not force and stamp_ok(dense_dir, h) and stamp_ok(sparse_dir, h):
        return RoomDatasets(dense_dir, sparse_dir)
    scene = build_room_scene(config)
    train, test = scene.split["train"], scene.split["test"]

    def effects(i: int, rgb: np.ndarray) -> np.ndarray:
        return camera_effects(config, i, rgb)

    write_dataset(scene, dense_dir, config, train + test, {"train": train, "test": test},
                  scene_name=SCENE_NAME, effects=effects, workers=workers, force=True)
    sparse_train = train[:: config.sparse_every]
    write_dataset(scene, sparse_dir, config, sparse_train + test, {"train": sparse_train, "test": test},
                  scene_name=SCENE_NAME + " (sparse)", rendered_in=dense_dir, workers=workers, force=True)
    return RoomDatasets(dense_dir, sparse_dir)
