"""Settings of structure from known poses (:mod:`neural_reloc.sfm`): SIFT, matching of
pose-neighbour pairs and triangulation. The classical method's config holds them
(``features``, ``matching``, ``triangulation``, mirrored by config/classical.yaml); the
neural map's sparse depth uses their defaults (descriptor synthesis has its own feature
settings and uses only RootSIFT and the matcher of :mod:`neural_reloc.sfm`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FeatureConfig:
    """SIFT (pycolmap's CPU implementation) with RootSIFT descriptors."""

    # Keep at most this many keypoints per image (COLMAP keeps the coarsest scales first).
    max_num_features: int = 8192
    # Cap on an image's long side in pixels before SIFT (0 = the dataset's resolution);
    # keypoints are scaled back to the image's own pixel coordinates either way.
    max_long_side: int = 0
    # First octave of the scale space: -1 upsamples the image 2x first, which finds
    # more (and finer) keypoints on small images; 0 starts at the image's resolution.
    first_octave: int = -1
    # Number of octaves of the scale space.
    num_octaves: int = 4
    # Scales sampled per octave.
    octave_resolution: int = 3
    # Minimum contrast of a difference-of-Gaussians peak (COLMAP's default: 0.02 / 3);
    # lower finds more keypoints in weakly textured images.
    peak_threshold: float = 0.0067
    # Maximum ratio of principal curvatures: rejects edge-like peaks.
    edge_threshold: float = 10.0
    # A keypoint with several dominant gradient orientations gets a descriptor for each
    # of up to this many (COLMAP's default: 2).
    max_num_orientations: int = 2
    # Skip orientation estimation (gravity-aligned cameras only).
    upright: bool = False


@dataclass
class MatchingConfig:
    """Which mapping images are matched to each other, and how matches are accepted."""

    # Each mapping image is matched to this many nearest mapping images (camera-centre
    # distance, among those whose viewing direction is within max_view_angle_deg).
    num_neighbors: int = 10
    # Two cameras whose optical axes differ by more than this never form a pair.
    max_view_angle_deg: float = 60.0
    # Lowe's ratio test: a match is kept when its descriptor distance is below this
    # fraction of the distance to the second nearest neighbour (on top of being a
    # mutual nearest neighbour).
    ratio_threshold: float = 0.8
    # Geometric verification with the known poses: a match is kept when its Sampson
    # distance to the epipolar geometry is at most this many pixels.
    max_epipolar_error_px: float = 2.0
    # A pair with fewer verified matches contributes none (COLMAP's two-view minimum).
    min_verified_matches: int = 15
    # torch threads of descriptor matching (mapping pairs and queries), set for its
    # duration only; 0 = torch's default. 1: these small similarity matrices (a few
    # thousand keypoints a side) lose more to thread synchronization than they gain on
    # a shared CPU (NOTES.md).
    num_threads: int = 1


@dataclass
class TriangulationConfig:
    """Multi-view triangulation of the tracks with the known mapping poses."""

    # Every observation of a kept point reprojects within this many pixels of its
    # keypoint; worse observations are dropped and the point re-triangulated.
    max_reprojection_error_px: float = 2.0
    # A point must be seen under at least this angle between two of its viewing rays
    # (COLMAP's default): narrower points have an unreliable depth.
    min_triangulation_angle_deg: float = 1.5
    # A point needs at least this many observations (2 = every two-view match).
    min_track_length: int = 2
    # Gauss-Newton iterations refining each point's reprojection error after the
    # linear (ray-midpoint) solution.
    refine_iterations: int = 5
    # Rounds of "drop the worst observation of each point over the threshold, then
    # re-triangulate"; observations still over it afterwards are dropped at once.
    max_filter_rounds: int = 5


@dataclass
class FlowStereoConfig:
    """Dense two-view stereo between mapping views with the known poses
    (:mod:`neural_reloc.sfm.flow_stereo`): optical flow from each view to views near it
    (each warped onto the plane at the view's typical distance first), triangulated,
    kept where the views agree."""

    # Each view is matched by flow to this many other views (optical axes within
    # max_view_angle_deg, chosen by target_triangulation_angle_deg).
    num_neighbors: int = 4
    # Two cameras whose optical axes differ by more than this are not matched by flow.
    max_view_angle_deg: float = 30.0
    # Among those, the views whose baseline sees the view's typical scene distance (its
    # triangulated keypoints' median) at the angle nearest this; 0: the nearest views.
    target_triangulation_angle_deg: float = 16.0
    # Flow is measured where the view's grey-level gradient is at least this (levels per
    # pixel, Sobel / 8): on plain surfaces flow is a guess.
    min_gradient: float = 4.0
    # Forward and backward flow must agree within this many pixels.
    consistency_px: float = 0.5
    # The two viewing rays of a measured pixel must meet at this angle or more.
    min_triangulation_angle_deg: float = 2.0
    # The triangulated point reprojects within this many pixels of the flow's end in
    # the neighbour.
    max_reprojection_error_px: float = 1.0
    # A pixel's distance is kept only when this many neighbours measured it ...
    min_agreeing_views: int = 3
    # ... within this fraction of each other (their mean is kept).
    max_disagreement_rel: float = 0.01
    # At most this many measured pixels per view (a seeded random subset).
    max_points_per_view: int = 4000
    seed: int = 0


@dataclass
class PlainRegionsConfig:
    """Free space in front of plain surfaces, bounded by the depth measured on their
    border (:mod:`neural_reloc.sfm.plain_regions`)."""

    # Plain: grey-level gradient under this (levels per pixel, Sobel / 8; the same
    # scale as flow_stereo.min_gradient, which it need not equal: this decides what is
    # bounded, that what flow measures).
    min_gradient: float = 4.0
    # Morphological opening of the plain mask, pixels (speckle neither joins nor splits regions).
    opening_px: int = 2
    # Regions smaller than this fraction of the image are left alone.
    min_region_fraction: float = 0.005
    # A region's border: measured pixels within this many pixels of it (or inside it).
    border_px: int = 6
    # Regions with fewer measured border pixels get no bound.
    min_border_points: int = 3
    # Free space ends this fraction in front of the bound (the region need not be flat).
    margin: float = 0.2
    # At most this many bounded pixels per view (a seeded random subset).
    max_points_per_view: int = 8000
    seed: int = 0


__all__ = ["FeatureConfig", "FlowStereoConfig", "MatchingConfig", "PlainRegionsConfig", "TriangulationConfig"]
