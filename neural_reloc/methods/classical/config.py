"""Classical (structure-based, hloc-style) baseline: every setting, defaults in one place
(mirrored by config/classical.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...config_fields import setting, with_default
from ...geometry.pnp import PnPConfig
from ...sfm.config import FeatureConfig, MatchingConfig, TriangulationConfig
from ..common.config import LocalizationConfigBase


@dataclass
class RetrievalConfig:
    """VLAD over RootSIFT, with a k-means vocabulary of the mapping images (no learned
    weights); the top_k mapping images by cosine similarity are matched."""

    # Visual words (k-means clusters); the VLAD vector has num_words * 128 dimensions.
    num_words: int = 64
    # Lloyd iterations of k-means.
    kmeans_iterations: int = 25
    # k-means runs on a random subset of the mapping descriptors of at most this size.
    kmeans_max_descriptors: int = 100000
    # Seed of that subset and of the initial centroids: same data, same vocabulary.
    seed: int = 0
    # Power normalization: each component becomes sign(x) |x|^alpha (0.5: signed
    # square root, which damps bursty visual words; 1 = off).
    power_alpha: float = 0.5
    # Mapping images retrieved for a query without a prior.
    top_k: int = 5


@dataclass
class LocalizationConfig(LocalizationConfigBase):
    """The classical pipeline's localization settings (measurements behind the
    defaults: NOTES.md)."""

    num_prior_neighbors: int = setting(
        5, "With a prior pose, the query is matched to this many mapping images nearest to it (camera-centre "
        "distance among those within matching.max_view_angle_deg of its viewing direction) instead of "
        "retrieved ones.", range=(1, 100_000),
    )
    ratio_threshold: float = setting(
        0.8, "Lowe's ratio test of query-to-mapping-image matches (mutual nearest neighbours).", range=(0.0, 1.0)
    )
    min_inliers: int = with_default(LocalizationConfigBase, "min_inliers", 20)
    min_inlier_ratio: float = with_default(LocalizationConfigBase, "min_inlier_ratio", 0.2)
    pnp: PnPConfig = setting(
        PnPConfig(reprojection_threshold_px=4.0), "PnP + RANSAC; its reprojection threshold is in pixels of "
        "the query image."
    )


@dataclass
class ClassicalConfig:
    features: FeatureConfig = default(default_factory=FeatureConfig)
    matching: MatchingConfig = default(default_factory=MatchingConfig)
    triangulation: TriangulationConfig = default(default_factory=TriangulationConfig)
    retrieval: RetrievalConfig = default(default_factory=RetrievalConfig)
    localization: LocalizationConfig = default(default_factory=LocalizationConfig)
