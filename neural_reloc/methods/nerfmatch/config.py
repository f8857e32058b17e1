"""NeRFMatch configuration, defaults in one place (mirrored by config/nerfmatch.yaml).

Zhou et al., "The NeRFect Match: Exploring NeRF Features for Visual Localization"
(../shared/papers/nerfmatch.md). The map's field is used as it is (never retrained):
its internal features, volume-rendered at 3D points (eq. 2), are matched to image
features by a learned image encoder and a small projection of the NeRF features.
``matcher.variant`` picks NeRFMatch-Mini (Sec. 4.1) or the full NeRFMatch (Sec. 4.2:
attention, coarse-to-fine); a map's component loads only as the variant it was trained as.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...config_fields import setting, with_default
from ...geometry.pnp import PnPConfig
from ...nerf.config import NeuralMapConfig
from ...nerf.field import FEATURE_LAYERS
from ..common.config import KEYFRAME_RANSAC_ITERATIONS, RenderingLocalizationConfig


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
    # D_f: channels of the fine map (H/2) of the full variant (first stage + upsampled trunk).
    fine_dim: int = 64


#: The matcher variants: NeRFMatch-Mini (Sec. 4.1) and the full NeRFMatch (Sec. 4.2).
VARIANTS = ("mini", "full")


@dataclass
class MatcherConfig:
    # Temperature of the dual softmax over cosine similarities (training and matching).
    temperature: float = 0.1
    # "mini": the encoder's and the projected NeRF features matched as they are (Sec. 4.1);
    # "full": attention before the dual softmax, then a fine stage placing each match
    # inside its cell (Sec. 4.2). Weights of one variant load only as that variant.
    variant: str = "mini"
    # Full variant, coarse matching: layers of (self-attention, weights shared by both
    # domains, then cross-attention), linear attention, heads over encoder.dim channels.
    layers: int = 2
    heads: int = 4
    # Frequencies of the NeRF positional encoding of the rendered 3D points (in the
    # field's own domain), added after the first self-attention as in the paper.
    point_frequencies: int = 6
    # Full variant, fine matching: a window x window patch of the fine map (H/2 pixels,
    # odd) centred on the matched cell; softmax-attention layers over the NeRF point's
    # feature and the window's features, heads over encoder.fine_dim channels.
    window: int = 5
    fine_layers: int = 1
    fine_heads: int = 2


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
    # Full variant: the loss is L_c + fine_weight * L_f (eq. 3, eq. 4); per pair, L_f is
    # over at most fine_matches coarse matches (ground-truth associations and predicted
    # mutual matches whose point projects into their window).
    fine_weight: float = 1.0
    fine_matches: int = 256
    # Wall-clock budget of the matcher training (0: none): it stops at steps or here.
    time_budget_s: float = 0.0
    seed: int = 0


_PNP_COARSE = PnPConfig(reprojection_threshold_px=6.0, max_ransac_points=500)
_PNP_KEYFRAME = PnPConfig(reprojection_threshold_px=8.0, max_iterations=KEYFRAME_RANSAC_ITERATIONS)


@dataclass
class LocalizationConfig(RenderingLocalizationConfig):
    """NeRFMatch's localization settings."""

    hypothesis_accept_inlier_ratio: float = with_default(
        RenderingLocalizationConfig, "hypothesis_accept_inlier_ratio", 0.1,
        " NeRFMatch applies it only when its retrieval index has keyframes (hypotheses ranked by keyframe PnP).")

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
    keyframe_stride: int = setting(
        2, "Keyframes of the retrieval index: the NeRF features (projected into the matching space) and 3D points "
        "rendered at the centres of blocks of this many x this many patches of each indexed view, when the "
        "component is trained (0: none; retrieved views are ranked by global descriptor only); the query's "
        "features are pooled to the same blocks. The Mini variant's only: the full variant matches after its "
        "attention layers, so its index has no keyframes.", range=(0, 4096),
    )
    keyframe_min_similarity: float = setting(
        0.5, "A keyframe verification match (mutual nearest neighbours of the query's pooled features and a "
        "keyframe's projected NeRF features) needs a cosine similarity above this.", range=(-1.0, 1.0),
    )
    keyframe_pnp: PnPConfig = setting(
        _PNP_KEYFRAME, "PnP of the keyframe verification, in the encoder camera (image_long_side pixels wide): "
        "a keyframe point stands for a block of keyframe_stride patches, so the threshold is about half of one.",
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
        m, e = self.matcher, self.encoder
        if m.variant not in VARIANTS:
            raise ValueError(f"matcher.variant={m.variant!r} must be one of {', '.join(VARIANTS)}")
        if m.variant == "full":
            if m.window < 3 or m.window % 2 == 0:
                raise ValueError(f"matcher.window={m.window} must be odd and at least 3")
            if e.dim % 4 or e.dim % m.heads:
                raise ValueError(f"encoder.dim={e.dim} must be a multiple of 4 and of matcher.heads={m.heads}")
            if e.fine_dim % m.fine_heads:
                raise ValueError(
                    f"encoder.fine_dim={e.fine_dim} must be a multiple of matcher.fine_heads={m.fine_heads}")


__all__ = ["VARIANTS", "LocalizationConfig", "NerfMatchConfig"]
