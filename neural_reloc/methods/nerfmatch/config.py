"""NeRFMatch configuration, defaults in one place (mirrored by config/nerfmatch.yaml).

Zhou et al., "The NeRFect Match: Exploring NeRF Features for Visual Localization"
(../shared/papers/nerfmatch.md). The map's field is used as it is (never retrained):
its internal features, volume-rendered at 3D points (eq. 2), are matched to image
features by a learned image encoder and a small projection of the NeRF features.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...config_fields import setting
from ...geometry.pnp import PnPConfig
from ...nerf.config import NeuralMapConfig
from ...nerf.field import FEATURE_LAYERS
from ..common.config import RenderingLocalizationConfig


@dataclass
class NerfFeatureConfig:
    # The field's internal layer whose volume-rendered features are matched (eq. 2):
    # one of FEATURE_LAYERS (the multiresolution grid "encoding", the density MLP's
    # "density_hidden", "geo_feat" fed to the colour MLP, the colour MLP's "color_hidden").
    layer: str = "density_hidden"
    # Features and 3D points are rendered at the centre of every patch x patch block of
    # the reference view; the image encoder's coarse map has the same stride.
    patch: int = 8


@dataclass
class EncoderConfig:
    # Channels of the image encoder's three stride-2 stages (coarse map at H/8).
    channels: tuple[int, ...] = (32, 64, 128)
    # Dilations of the two context convolutions after the last stage.
    context_dilations: tuple[int, ...] = (2, 4)
    # D_c: dimension of the matching space (image and projected NeRF features).
    dim: int = 128
    # Hidden width of the MLP projecting NeRF features into the matching space.
    nerf_hidden: int = 128


@dataclass
class MatcherConfig:
    # Temperature of the dual softmax over cosine similarities (training and matching).
    temperature: float = 0.1


@dataclass
class NerfMatchTrainConfig:
    # Long side (pixels) of the images the encoder sees, in training and localization
    # (rounded to a multiple of features.patch).
    image_long_side: int = 320
    steps: int = 5000
    lr: float = 1e-3
    # The learning rate is multiplied by lr_decay after decay_at_fraction of the steps.
    lr_decay: float = 0.1
    decay_at_fraction: float = 0.8
    # A query image's reference render is one of its this many nearest training views
    # (itself included), at the view's pose or a jittered one: the gap between a
    # retrieved reference and the query that the matcher meets at run time.
    reference_neighbors: int = 4
    # Jittered renders cached per training view, and their offsets (translation as a
    # fraction of the scene extent, rotation in degrees, each exact, random direction).
    jitter_renders: int = 2
    jitter_translation_rel: float = 0.03
    jitter_rotation_deg: float = 10.0
    # A reference point is visible in the query (a ground-truth match) when its depth
    # agrees with the query's rendered depth at its cell within this fraction.
    visibility_depth_rel: float = 0.05
    # Random gain and offset of the query image's brightness (exposure changes).
    photometric_jitter: float = 0.2
    # Wall-clock budget of the matcher training (0: none): it stops at steps or here.
    time_budget_s: float = 0.0
    seed: int = 0


_PNP_COARSE = PnPConfig(reprojection_threshold_px=6.0, max_ransac_points=500)


@dataclass
class LocalizationConfig(RenderingLocalizationConfig):
    """NeRFMatch-Mini's localization settings."""

    min_score: float = setting(
        0.0, "A mutual dual-softmax match needs at least this score (0: every mutual match).", range=(0.0, 1.0)
    )
    pnp: PnPConfig = setting(
        _PNP_COARSE, "PnP + RANSAC of the matching rounds, in the encoder camera (image_long_side pixels "
        "wide): matches sit at patch centres, so the threshold is most of a patch.",
    )
    retrieval_long_side: int = setting(
        80, "Retrieval prior: global descriptors from encoder maps of images this long (long side), of "
        "rendered reference views (when the component is trained) and of the query.", range=(16, 4096),
    )


@dataclass
class NerfMatchConfig:
    map: NeuralMapConfig = default(default_factory=NeuralMapConfig)
    features: NerfFeatureConfig = default(default_factory=NerfFeatureConfig)
    encoder: EncoderConfig = default(default_factory=EncoderConfig)
    matcher: MatcherConfig = default(default_factory=MatcherConfig)
    train: NerfMatchTrainConfig = default(default_factory=NerfMatchTrainConfig)
    localization: LocalizationConfig = default(default_factory=LocalizationConfig)

    def __post_init__(self) -> None:
        if self.features.layer not in FEATURE_LAYERS:
            raise ValueError(f"features.layer={self.features.layer!r} must be one of {', '.join(FEATURE_LAYERS)}")


__all__ = ["LocalizationConfig", "NerfMatchConfig"]
