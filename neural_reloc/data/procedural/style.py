"""What every procedural scene shares: camera, texture, lighting and anti-aliasing
settings (:class:`SceneStyle`, the base of each scene's config), the random streams
and the generator version that keys cached datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from ...geometry.camera import Camera

#: Bumped whenever the generator's output for a given config changes (part of the
#: stamp hash, so old datasets are regenerated rather than silently reused).
GENERATOR_VERSION = 1
#: Independent random streams, so that e.g. changing an object count does not change
#: the wall textures.
STREAM_TRAJECTORY, STREAM_OBJECTS, STREAM_TEXTURES = 1, 2, 3


@dataclass(frozen=True)
class SceneStyle:
    """Camera, textures, lighting and anti-aliasing (lengths in metres, angles in
    degrees). Scene configs extend it with their layout and camera paths."""

    seed: int = 0

    # -- camera (pinhole, square pixels, principal point at the image centre)
    width: int = 640
    height: int = 480
    hfov_deg: float = 60.0

    # -- textures (sampled on a texel grid, magnified bilinearly)
    texel_m: float = 0.01
    #: value-noise octaves: feature sizes and relative amplitudes
    noise_scales_m: tuple[float, ...] = (0.4, 0.16, 0.06)
    noise_amplitudes: tuple[float, ...] = (1.0, 0.55, 0.25)
    #: how far the noise mixes between a surface's two base colours (0..1)
    noise_contrast: float = 0.4
    #: relative brightness modulation (std) by the finer noise octaves
    brightness_noise: float = 0.12
    #: fraction of a surface covered by its third ("patch") colour, whose hue is offset
    #: from the surface's by a random amount in ``patch_hue_offset``
    patch_fraction: float = 0.3
    patch_hue_offset: tuple[float, float] = (0.25, 0.75)
    #: width of the patch boundary ramp, in standard deviations of the patch noise
    patch_softness: float = 0.15
    #: saturation / value ranges of surface base colours
    base_saturation: tuple[float, float] = (0.2, 0.6)
    base_value: tuple[float, float] = (0.4, 0.8)
    #: value / hue difference between a surface's two base colours
    base_value_step: tuple[float, float] = (0.15, 0.3)
    base_hue_step: float = 0.08
    #: surface hues follow the golden-ratio sequence (distinct palettes) plus this jitter
    surface_hue_jitter: float = 0.05
    accent_saturation: tuple[float, float] = (0.5, 0.9)
    accent_value: tuple[float, float] = (0.25, 0.95)
    #: edge softness of posters, blobs, stripes, tile grout (about one texel)
    edge_softness_m: float = 0.012
    poster_density_per_m2: float = 1.0
    poster_size_m: tuple[float, float] = (0.15, 0.6)
    pattern_period_m: tuple[float, float] = (0.08, 0.2)
    blob_density_per_m2: float = 5.0
    blob_radius_m: tuple[float, float] = (0.04, 0.14)
    floor_tile_m: float = 0.5
    floor_grout_m: float = 0.02
    #: grout colour: the complementary hue at this fraction of a base colour's value
    floor_grout_value: float = 0.6
    floor_tile_jitter: float = 0.06
    floor_noise_scale: float = 0.35
    floor_rugs: int = 1
    rug_size_m: tuple[float, float] = (0.8, 1.4)
    #: noise amplitude on plain surfaces (plain wall section, ceiling)
    plain_noise_amplitude: float = 0.02
    ceiling_saturation: float = 0.08
    ceiling_value: float = 0.85

    # -- lighting (view-independent)
    ambient: float = 0.55
    sun_direction: tuple[float, float, float] = (0.35, 0.2, 1.0)
    sun_intensity: float = 0.3
    lamp_position: tuple[float, float, float] = (0.4, -0.3, 2.5)
    lamp_intensity: float = 0.45
    lamp_falloff_m: float = 2.5

    # -- anti-aliasing
    #: edge pixels and pixels with a footprint above ``aa_footprint_texels`` texels get
    #: ``supersample`` x ``supersample`` samples
    supersample: int = 3
    aa_footprint_texels: float = 1.0

    def camera(self) -> Camera:
        fx = 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2.0)
        return Camera(
            width=self.width,
            height=self.height,
            fx=fx,
            fy=fx,
            cx=self.width / 2.0,
            cy=self.height / 2.0,
            source="procedural scene",
        )

    def config_hash(self) -> str:
        blob = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
