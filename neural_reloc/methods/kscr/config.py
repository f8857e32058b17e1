"""KSCR configuration (descriptor synthesis + D2S), defaults in one place (mirrored by
config/kscr.yaml).

Bui et al., "Leveraging Neural Radiance Field in Descriptor Synthesis for Keypoints
Scene Coordinate Regression" (../shared/papers/descriptor-synthesis.md), on D2S.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...config_fields import setting
from ...geometry.pnp import PnPConfig
from ...nerf.config import NeuralMapConfig
from ...synthesis.config import SynthesisConfig
from ..common.config import LocalizationConfigBase
from .model import DEFAULT_DIM, DEFAULT_GNN_LAYERS, DEFAULT_HEADS, DEFAULT_MLP

_COUNT = (1, 1_000_000)


@dataclass
class D2SConfig:
    dim: int = setting(DEFAULT_DIM, "Width of the attention layers (descriptors are projected to it).", range=_COUNT)
    gnn_layers: int = setting(DEFAULT_GNN_LAYERS, "Attention layers over an image's keypoints (the paper: 5).",
                              range=(0, 100))
    heads: int = setting(DEFAULT_HEADS, "Attention heads (dim must be a multiple).", range=(1, 64))
    mlp: tuple[int, ...] = setting(DEFAULT_MLP, "Hidden widths of the per-keypoint MLP before its 4 outputs "
                                   "(x, y, z, reliability); the paper: 512, 1024, 1024, 512.", range=_COUNT)


@dataclass
class KscrTrainConfig:
    steps: int = setting(3000, "Optimizer steps.", range=_COUNT)
    lr: float = setting(5e-4, "Adam learning rate (the paper's initial rate).", range=(0.0, 1.0))
    lr_decay: float = setting(0.5, "The learning rate is multiplied by this at each of decay_at_fractions (the "
                              "paper's decay parameter).", range=(0.0, 1.0))
    decay_at_fractions: tuple[float, ...] = setting((0.5, 0.75, 0.9), "Fractions of the steps where the learning "
                                                    "rate decays.", range=(0.0, 1.0))
    batch_images: int = setting(4, "Images per step (the paper's batch size).", range=_COUNT)
    max_keypoints: int = setting(512, "At most this many random keypoints of an image per step (attention "
                                 "cost grows with its square).", range=_COUNT)
    use_synthetic: bool = setting(True, "Train on the synthetic views too (false: real views alone, the "
                                  "paper's baseline).")
    descriptor_noise: float = setting(0.25, "Gaussian noise of this norm is added to each (unit) training descriptor "
                                      "at every step, then renormalized: the regressor learns a neighbourhood of a "
                                      "descriptor, as a query sees the point from another viewpoint.",
                                      range=(0.0, 10.0))
    synthetic_fraction: float = setting(0.5, "Share of a step's images drawn from the synthetic views (when "
                                        "there are any).", range=(0.0, 1.0))
    weight_coordinates: float = setting(1.0, "Weight of the scene-coordinate loss.", range=(0.0, 1e6))
    weight_reliability: float = setting(0.1, "Weight of the reliability loss.", range=(0.0, 1e6))
    weight_reprojection: float = setting(0.5, "Weight of the reprojection loss.", range=(0.0, 1e6))
    reprojection_after_fraction: float = setting(0.3, "The reprojection loss is added from this fraction of the "
                                                 "steps on.", range=(0.0, 1.0))
    max_reprojection: float = setting(0.1, "Cap of a keypoint's reprojection error in the loss (pixels / focal "
                                      "length).", range=(0.0, 1e3))
    time_budget_s: float = setting(0.0, "Stop training after this many seconds (0: none).", range=(0.0, 1e9))
    seed: int = setting(0, "Seed of the view and keypoint draws and of the initialization.", range=(0, 2**31 - 1))


_PNP = PnPConfig(reprojection_threshold_px=8.0, max_ransac_points=1000)


@dataclass
class LocalizationConfig(LocalizationConfigBase):
    """KSCR's localization: the query's keypoints -> D2S -> the reliable ones -> PnP."""

    min_reliability: float = setting(0.5, "Keypoints whose predicted reliability is below this are not used.",
                                     range=(0.0, 1.0))
    max_correspondences: int = setting(1024, "At most this many of the most reliable keypoints go to PnP.",
                                       range=_COUNT)
    max_reference_distance_rel: float = setting(
        0.5, "A pose whose camera is further than this fraction of the mapping cameras' bounding-box diagonal "
        "from every mapping camera is implausible: the frame fails.", range=(0.0, 1e9),
    )
    covariance_scale: float = setting(
        4.0, "PnP's covariance (from the inliers' residuals, as if each 3D point were exact) times this: regressed "
        "points err together, and on the room's queries the error was a median 1.6 standard deviations "
        "unscaled (NOTES.md).", range=(0.0, 1e9),
    )
    pnp: PnPConfig = setting(_PNP, "PnP + RANSAC (poselib); regressed coordinates are less precise than "
                             "triangulated ones, so the threshold is wider than a matcher's.")


@dataclass
class KscrConfig:
    image_long_side: int = setting(
        0, "Real views, synthetic renders and queries are used at this long side (pixels; an image smaller "
        "than that keeps its size); 0: the data's own resolution. Rendering dominates synthesis and its cost grows "
        "with the pixels: on a CPU, half the resolution renders about 4x as many views.", range=(0, 100_000),
    )
    synthesis_dir: str = setting(
        "", "Descriptor synthesis goes to (and resumes in) this folder, e.g. one written by `neural-reloc "
        "synthesize` with the same settings, which is then reused; empty: the build's work folder.",
    )
    map: NeuralMapConfig = default(default_factory=NeuralMapConfig)
    synthesis: SynthesisConfig = default(default_factory=SynthesisConfig)
    model: D2SConfig = default(default_factory=D2SConfig)
    train: KscrTrainConfig = default(default_factory=KscrTrainConfig)
    localization: LocalizationConfig = default(default_factory=LocalizationConfig)


__all__ = ["D2SConfig", "KscrConfig", "KscrTrainConfig", "LocalizationConfig"]
