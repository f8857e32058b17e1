"""The textured procedural scene: the project's embedded default and base of fast tests.

A closed room (metric, z-up world) with floor, ceiling, four walls and a dozen boxes,
cylinders and spheres, textured with multi-octave value noise, coloured blobs and
patterned "posters" in per-surface palettes, plus deliberately hard parts (a
plain-painted wall section, a plain ceiling and a repetitive tiled floor). The camera
flies one closed loop around the room centre, looking outwards; every
``test_stride``-th frame is held out. Textured everywhere and queried between its own
training frames, it is easy: realistic rooms with queries off the mapping walk are in
:mod:`.room`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ...geometry.frames import opengl_c2w_from_opencv_c2w
from .primitives import GEOM_TOL, Box, Cylinder, Room, Sphere, Tile
from .scene import ProceduralScene
from .style import STREAM_OBJECTS, STREAM_TRAJECTORY, SceneStyle
from .textures import Painter, build_atlas, fbm, hsv, paint_tiled_floor
from .walks import look_pose_c2w_opencv


@dataclass(frozen=True)
class ProceduralSceneConfig(SceneStyle):
    """Every tunable of the textured procedural scene (lengths in metres, angles in
    degrees): the camera loop, the room and its objects, and the textures of this
    scene beyond :class:`~.style.SceneStyle`'s."""

    # -- trajectory: a closed loop around the room centre, looking outwards
    num_frames: int = 120
    #: every ``test_stride``-th frame (those with index % stride == stride // 2) is a
    #: held-out test view; the others are training views.
    test_stride: int = 5
    traj_center_xy: tuple[float, float] = (0.0, 0.0)
    traj_radius_x: float = 1.4
    traj_radius_y: float = 1.0
    traj_start_angle_deg: float = 0.0
    #: relative radius modulation amplitude and its cycles per loop
    traj_radius_wobble: float = 0.08
    traj_radius_cycles: int = 3
    traj_height_mean: float = 1.4
    traj_height_amplitude: float = 0.25
    traj_height_cycles: int = 2
    #: heading = outward direction + offset + amplitude * sin(cycles * angle + phase)
    #: (offset 90 = looking along the direction of travel)
    traj_yaw_offset_deg: float = 30.0
    traj_yaw_amplitude_deg: float = 55.0
    traj_yaw_cycles: int = 2
    traj_pitch_mean_deg: float = -8.0
    traj_pitch_amplitude_deg: float = 12.0
    traj_pitch_cycles: int = 3
    traj_roll_amplitude_deg: float = 3.0
    traj_roll_cycles: int = 4
    #: no camera centre is closer than this to any surface (checked; ValueError if not)
    min_clearance_m: float = 0.5

    # -- room: [-sx/2, sx/2] x [-sy/2, sy/2] x [0, sz]
    room_size: tuple[float, float, float] = (6.0, 5.0, 2.8)

    # -- objects
    num_floor_boxes: int = 4
    floor_box_half_xy: tuple[float, float] = (0.15, 0.42)
    floor_box_height: tuple[float, float] = (0.3, 1.1)
    num_floor_cylinders: int = 2
    floor_cylinder_radius: tuple[float, float] = (0.12, 0.3)
    floor_cylinder_height: tuple[float, float] = (0.4, 1.3)
    #: floor-to-ceiling pillar at the trajectory centre (0 disables it)
    central_pillar_radius: float = 0.2
    num_pillars: int = 1
    pillar_radius: tuple[float, float] = (0.1, 0.22)
    num_spheres: int = 3
    sphere_radius: tuple[float, float] = (0.12, 0.3)
    #: floating objects (spheres, boxes) keep at least this gap to floor and ceiling
    float_gap_m: float = 0.3
    sphere_on_floor_probability: float = 0.5
    num_wall_cabinets: int = 3
    cabinet_width: tuple[float, float] = (0.6, 1.4)
    cabinet_depth: tuple[float, float] = (0.22, 0.35)
    cabinet_height: tuple[float, float] = (0.12, 0.45)
    cabinet_z: tuple[float, float] = (0.9, 2.2)
    num_floating_boxes: int = 1
    floating_box_half: tuple[float, float] = (0.12, 0.3)
    floating_box_z: tuple[float, float] = (1.6, 2.3)
    #: objects keep this extra distance beyond ``min_clearance_m`` from the camera path
    object_path_margin_m: float = 0.1
    #: minimum gap between objects' bounding boxes
    object_gap_m: float = 0.08
    #: trajectory samples per frame used for object placement clearance
    placement_path_oversampling: int = 4
    placement_attempts: int = 3000

    # -- textures of this scene's objects and walls
    object_blob_density_per_m2: float = 14.0
    object_noise_contrast: float = 0.52
    object_poster_density_per_m2: float = 2.0
    object_poster_size_m: tuple[float, float] = (0.08, 0.3)
    #: fraction of the +x wall's width painted plain (low texture), floor to ceiling
    plain_wall_fraction: float = 0.3

def build_scene(config: ProceduralSceneConfig = ProceduralSceneConfig()) -> ProceduralScene:
    """Room, objects, textures and trajectory of a config (deterministic from the seed)."""
    _validate(config)
    sx, sy, sz = config.room_size
    room = Room(lo=np.array([-sx / 2, -sy / 2, 0.0]), hi=np.array([sx / 2, sy / 2, sz]))
    c2w_opencv_path = _trajectory_c2w_opencv(config, config.num_frames)
    dense_path = _trajectory_c2w_opencv(config, config.num_frames * config.placement_path_oversampling)
    objects = _place_objects(config, room, dense_path[:, :3, 3])

    for i, c2w in enumerate(c2w_opencv_path):
        centre = c2w[:3, 3]
        for prim in (room, *objects):
            dist = prim.distance(centre)
            if dist < config.min_clearance_m:
                raise ValueError(
                    f"procedural scene: camera {i} at {np.round(centre, 3).tolist()} is {dist:.3f} m from "
                    f"{prim.name} (< min_clearance_m={config.min_clearance_m}); adjust the trajectory or room"
                )

    tiles, tile_names = [], []
    for prim in (room, *objects):
        prim.tile_base = len(tiles)
        for k, (w, h) in enumerate(prim.tile_sizes()):
            tiles.append(Tile(width_m=float(w), height_m=float(h)))
            tile_names.append(f"{prim.name}/{k}")
    atlas = build_atlas(config, tiles, functools.partial(_paint_tile, config, room))

    c2w_opengl = np.stack([opengl_c2w_from_opencv_c2w(T) for T in c2w_opencv_path])
    k = config.test_stride
    test = [i for i in range(config.num_frames) if k > 0 and i % k == k // 2]
    train = [i for i in range(config.num_frames) if i not in set(test)]
    return ProceduralScene(
        config=config,
        room=room,
        objects=objects,
        tiles=tiles,
        atlas=atlas,
        camera=config.camera(),
        c2w_opengl=c2w_opengl,
        split={"train": train, "test": test},
        tile_names=tile_names,
    )


def _validate(config: ProceduralSceneConfig) -> None:
    problems = []
    if config.width <= 0 or config.height <= 0:
        problems.append(f"image size {config.width}x{config.height}")
    if not 0 < config.hfov_deg < 180:
        problems.append(f"hfov_deg={config.hfov_deg}")
    if config.num_frames < 2:
        problems.append(f"num_frames={config.num_frames} (need >= 2)")
    if config.test_stride == 1 or config.test_stride < 0:
        problems.append(f"test_stride={config.test_stride} (0 = no test split, or >= 2)")
    if config.supersample < 1:
        problems.append(f"supersample={config.supersample}")
    if len(config.noise_scales_m) != len(config.noise_amplitudes):
        problems.append("noise_scales_m and noise_amplitudes differ in length")
    if min(config.room_size) <= 0 or config.texel_m <= 0:
        problems.append("room_size and texel_m must be positive")
    if problems:
        raise ValueError("invalid ProceduralSceneConfig: " + "; ".join(problems))


# ==================================================================== trajectory
def _trajectory_c2w_opencv(config: ProceduralSceneConfig, n: int) -> np.ndarray:
    """OpenCV camera-to-world poses of ``n`` evenly spaced samples of the closed loop."""
    phases = np.random.default_rng([config.seed, STREAM_TRAJECTORY]).uniform(0.0, 2 * math.pi, 5)
    theta = 2 * math.pi * np.arange(n) / n + math.radians(config.traj_start_angle_deg)
    scale = 1.0 + config.traj_radius_wobble * np.sin(config.traj_radius_cycles * theta + phases[0])
    cx, cy = config.traj_center_xy
    x = cx + config.traj_radius_x * scale * np.cos(theta)
    y = cy + config.traj_radius_y * scale * np.sin(theta)
    z = config.traj_height_mean + config.traj_height_amplitude * np.sin(
        config.traj_height_cycles * theta + phases[1]
    )
    yaw = (
        theta
        + math.radians(config.traj_yaw_offset_deg)
        + math.radians(config.traj_yaw_amplitude_deg) * np.sin(config.traj_yaw_cycles * theta + phases[2])
    )
    pitch = math.radians(config.traj_pitch_mean_deg) + math.radians(config.traj_pitch_amplitude_deg) * np.sin(
        config.traj_pitch_cycles * theta + phases[3]
    )
    roll = math.radians(config.traj_roll_amplitude_deg) * np.sin(config.traj_roll_cycles * theta + phases[4])
    return np.stack([look_pose_c2w_opencv((x[i], y[i], z[i]), yaw[i], pitch[i], roll[i]) for i in range(n)])


# ======================================================================= objects
def _place_objects(config: ProceduralSceneConfig, room: Room, path: np.ndarray) -> list:
    rng = np.random.default_rng([config.seed, STREAM_OBJECTS])
    lo, hi = room.lo, room.hi
    keep_off = config.min_clearance_m + config.object_path_margin_m
    placed: list = []

    def fits(obj) -> bool:
        blo, bhi = obj.aabb()
        if np.any(blo < lo - GEOM_TOL) or np.any(bhi > hi + GEOM_TOL):
            return False
        g = config.object_gap_m
        for other in placed:
            olo, ohi = other.aabb()
            if np.all(blo < ohi + g) and np.all(olo < bhi + g):
                return False
        return all(obj.distance(p) >= keep_off for p in path)

    def place(make, count: int, kind: str) -> None:
        for k in range(count):
            for _ in range(config.placement_attempts):
                obj = make(f"{kind}{k}")
                if fits(obj):
                    placed.append(obj)
                    break
            else:
                raise ValueError(
                    f"procedural scene: could not place {kind}{k} in {config.placement_attempts} attempts "
                    "(room too small / trajectory too wide for the requested objects)"
                )

    def uniform_xy(margin: float) -> np.ndarray:
        return np.array(
            [rng.uniform(lo[0] + margin, hi[0] - margin), rng.uniform(lo[1] + margin, hi[1] - margin)]
        )

    if config.central_pillar_radius > 0:
        pillar = Cylinder(
            center_xy=np.array(config.traj_center_xy, dtype=np.float64),
            radius=config.central_pillar_radius,
            z0=lo[2],
            z1=hi[2],
            name="central_pillar",
        )
        if not fits(pillar):
            raise ValueError("procedural scene: the central pillar is too close to the camera path")
        placed.append(pillar)

    def floor_box(name):
        hx, hy = rng.uniform(*config.floor_box_half_xy, size=2)
        h = rng.uniform(*config.floor_box_height)
        c = uniform_xy(0.0)
        return Box(
            np.array([c[0], c[1], lo[2] + h / 2]), np.array([hx, hy, h / 2]), rng.uniform(0, math.pi), name
        )

    def floor_cylinder(name):
        r = rng.uniform(*config.floor_cylinder_radius)
        return Cylinder(uniform_xy(r), r, lo[2], lo[2] + rng.uniform(*config.floor_cylinder_height), name)

    def pillar(name):
        r = rng.uniform(*config.pillar_radius)
        return Cylinder(uniform_xy(r), r, lo[2], hi[2], name)

    def sphere(name):
        r = rng.uniform(*config.sphere_radius)
        on_floor = rng.random() < config.sphere_on_floor_probability
        z = (
            lo[2] + r
            if on_floor
            else rng.uniform(lo[2] + r + config.float_gap_m, hi[2] - r - config.float_gap_m)
        )
        c = uniform_xy(r)
        return Sphere(np.array([c[0], c[1], z]), r, name)

    def cabinet(name):
        w = rng.uniform(*config.cabinet_width)
        dep = rng.uniform(*config.cabinet_depth)
        h = rng.uniform(*config.cabinet_height)
        z = rng.uniform(*config.cabinet_z)
        wall = int(rng.integers(4))
        axis, side = wall // 2, wall % 2
        along = 1 - axis
        c = np.zeros(3)
        c[2] = min(z, hi[2] - h / 2)
        c[axis] = (hi[axis] - dep / 2) if side else (lo[axis] + dep / 2)
        c[along] = rng.uniform(lo[along] + w / 2, hi[along] - w / 2)
        half = np.zeros(3)
        half[axis], half[along], half[2] = dep / 2, w / 2, h / 2
        return Box(c, half, 0.0, name)

    def floating_box(name):
        half = rng.uniform(*config.floating_box_half, size=3)
        c = uniform_xy(0.0)
        z = min(rng.uniform(*config.floating_box_z), hi[2] - half[2] - config.float_gap_m)
        return Box(np.array([c[0], c[1], z]), half, rng.uniform(0, math.pi), name)

    place(pillar, config.num_pillars, "pillar")
    place(cabinet, config.num_wall_cabinets, "cabinet")
    place(floor_box, config.num_floor_boxes, "box")
    place(floor_cylinder, config.num_floor_cylinders, "cylinder")
    place(sphere, config.num_spheres, "sphere")
    place(floating_box, config.num_floating_boxes, "floating_box")
    return placed


def _paint_tile(config: ProceduralSceneConfig, room: Room, i: int, p: Painter) -> None:
    """Texture of tile i: noisy walls (the +x one with a plain section), a tiled floor,
    a plain ceiling, busy objects."""
    tile, rng, hue = p.tile, p.rng, p.hue
    if i < room.tile_base + 4:  # walls
        if i == room.tile_base + 1:  # +x wall: a plain-painted section
            plain_to = config.plain_wall_fraction * tile.width_m
            p.noisy_base(config.noise_contrast)
            wall_col = p.base_color()
            plain = (p.U < plain_to)[..., None]
            n = fbm(rng, tile.th, tile.tw, config, config.noise_scales_m[:1], (1.0,))[..., None]
            p.img[:] = np.where(plain, wall_col * (1.0 + config.plain_noise_amplitude * n), p.img)
            p.blobs(config.blob_density_per_m2, allowed_u=(plain_to, tile.width_m))
            p.posters(config.poster_density_per_m2, allowed_u=(plain_to, tile.width_m))
        else:
            p.noisy_base(config.noise_contrast)
            p.blobs(config.blob_density_per_m2)
            p.posters(config.poster_density_per_m2)
    elif i == room.tile_base + 4:
        paint_tiled_floor(p)
    elif i == room.tile_base + 5:
        p.plain(hsv(hue, config.ceiling_saturation, config.ceiling_value), config.plain_noise_amplitude)
    else:
        p.noisy_base(config.object_noise_contrast)
        p.blobs(config.object_blob_density_per_m2)
        p.posters(config.object_poster_density_per_m2, size=config.object_poster_size_m)


#: Written into transforms.json's "scene".
SCENE_NAME = "neural_reloc procedural"


def generate_procedural_scene(
    out_dir,
    config: ProceduralSceneConfig = ProceduralSceneConfig(),
    *,
    workers: int | None = None,
    force: bool = False,
):
    """Write the textured procedural dataset to ``out_dir`` and return its
    transforms.json path (every frame; ``split.json`` holds the train / test split).

    Skips all work when ``out_dir`` already holds an intact output of the same config
    (checked against the stamp file, which is written last). ``workers`` rendering
    threads (default: the number of CPUs, at most 4) do not change the output.
    """
    from pathlib import Path

    from .dataset import stamp_ok, write_dataset

    out_dir = Path(out_dir)
    if not force and stamp_ok(out_dir, config.config_hash()):
        return out_dir / "transforms.json"
    scene = build_scene(config)
    frames = list(range(len(scene.c2w_opengl)))
    split = {k: scene.split[k] for k in ("train", "test")}
    return write_dataset(scene, out_dir, config, frames, split, scene_name=SCENE_NAME, workers=workers, force=True)
