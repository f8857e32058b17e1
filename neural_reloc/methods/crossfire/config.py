"""CROSSFIRE configuration, defaults in one place (mirrored by config/crossfire.yaml).

Moreau et al., "CROSSFIRE: Camera Relocalization On Self-Supervised Features from an
Implicit Representation" (../shared/papers/crossfire.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...geometry.pnp import PnPConfig
from ...nerf.config import EncodingConfig, NeuralMapConfig


@dataclass
class DescriptorConfig:
    dim: int = 32  # D, the paper's default
    head_hidden_dim: int = 64
    head_layers: int = 2
    # The head's own position encoding (tri-planes only; no dense levels), see
    # descriptor_head.py. Empty plane_resolutions and dense_resolutions = the paper's
    # head on the field's features alone.
    encoding: EncodingConfig = default(
        default_factory=lambda: EncodingConfig(
            kind="grid", dense_resolutions=(), plane_resolutions=(128, 256, 512), plane_features=8
        )
    )
    # Feature extractor CNN (8 conv layers, ReLU, two 2x2 max-pools: H/4 x W/4 x D).
    cnn_channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128, 128)
    # Dilation per 3x3 conv: the last three widen the receptive field to 128 px (40 px
    # undilated), see feature_extractor.py.
    cnn_dilations: tuple[int, ...] = (1, 1, 1, 1, 2, 4, 8)


@dataclass
class CrossfireLossConfig:
    """L = L_MSE + lambda1 L_DSSIM + lambda2 L_TV + L_pos + L_neg (paper eq. 3)."""

    lambda_dssim: float = 0.1  # lambda1
    lambda_tv: float = 1e-3  # lambda2
    tv_patch_size: int = 5  # random 5x5 depth patches
    tv_patches: int = 64
    weight_pos: float = 1.0
    weight_neg: float = 1.0
    neg_permutations: int = 4  # m random pixel permutations
    # t_lambda(i, j) = max(0, 1 - lambda * |xyz_i - xyz_j|); lambda = 1 / (this fraction
    # of the scene extent): descriptors of points further apart than that must differ.
    neg_zero_similarity_distance_rel: float = 0.02
    ssim_window: int = 7
    # One training view per step, (downsampled) to the descriptor-map scale of
    # localization: long side image_long_side (= localization.match_long_side, so the CNN
    # sees training images at the scale it sees queries: 4x this). Of that view a random
    # crop_long_side window (aspect kept) is rendered with RGB, depth, points and
    # descriptors for L_MSE/L_DSSIM/L_TV/L_pos/L_neg (0 = the whole view; SSIM and TV
    # need whole 2D patches, which a crop is). Crops keep a CPU step affordable.
    image_long_side: int = 160
    crop_long_side: int = 48
    # Weight of the view crop's photometric/geometric terms (L_MSE, lambda1 L_DSSIM,
    # lambda2 L_TV) relative to the paper's 1. Measured on the procedural scene (600
    # steps, CPU): at 1 they pull the shared grid toward one crop per step and the map
    # ends at 23.3 dB / 23% held-out depth error, against 30.6 dB / 2.2% without them
    # (random-ray L_MSE alone, below). Off by default on these budgets; set 1 for the
    # paper's objective on long (GPU) runs.
    view_photometric_weight: float = 0.0
    # Also train on random rays at full training resolution (photometric only).
    random_ray_batches: bool = True


@dataclass
class CrossfireTrainConfig:
    # The paper: lr 1e-3, divided by 10 after 2000 of 100k iterations. We scale the
    # schedule to our budget: the CNN and descriptor head use lr, then lr * decay after
    # decay_at_fraction of the steps (or of a stage's time budget, if that ends first).
    lr_descriptor: float = 1e-3
    lr_decay: float = 0.1
    decay_at_fraction: float = 0.5
    # Descriptor training starts after the map has some geometry (fraction of steps).
    descriptor_start_fraction: float = 0.0
    # Let L_pos/L_neg reshape the field (density weights and the shared grid) as in the
    # paper's joint training. On our short CPU budgets that wrecks the geometry (L_neg
    # is ~100x L_MSE early on: held-out depth error 2.5% -> 17% in our test): off by
    # default, the descriptor losses then train the head and the CNN only.
    descriptor_grad_to_field: bool = False
    # "staged" (default, see descriptor_training.py): after the field is trained, (1)
    # cache each training view's surface samples, (2) train the CNN on correspondences
    # between nearby training views given by the map's depth (InfoNCE), (3) fit the
    # descriptor head to the frozen CNN with the paper's L_pos + L_neg. "joint": the
    # paper's joint training, one view crop per step alongside the field (too slow to
    # converge on CPU budgets: 0-1% correct matches in our tests).
    schedule: str = "staged"
    surface_samples: int = 16  # k heaviest samples per ray kept for the head
    max_cached_views: int = 200  # training views cached (an even subset beyond this)
    # Stage 2, CNN on correspondences.
    cnn_steps: int = 600
    cnn_crop_long_side: int = 80  # descriptor-map cells (the CNN sees 4x this)
    cnn_pair_candidates: int = 8  # a partner is drawn from this many nearest views
    correspondence_max_distance_rel: float = 0.02  # visibility test, fraction of extent
    min_correspondences: int = 200  # fewer in a crop pair: skip the step
    nce_points: int = 2048  # correspondences per InfoNCE step
    nce_temperature: float = 0.07
    # Wall-clock budget of this stage (0: none): it stops at cnn_steps or the budget,
    # whichever comes first, and its lr decays at decay_at_fraction of either.
    cnn_time_budget_s: float = 0.0
    # Stage 3, descriptor field (head) distilled from the CNN with L_pos + L_neg.
    field_steps: int = 1000
    field_batch: int = 8192  # random pixels over all cached views per step
    lr_descriptor_grid: float = 1e-2  # the head's own tri-plane grid
    field_time_budget_s: float = 0.0  # as cnn_time_budget_s, for this stage


@dataclass
class LocalizationConfig:
    # Matching resolution of rendered/extracted descriptor maps (long side, short side);
    # the query image is resized to 4x this for the CNN.
    match_long_side: int = 160
    match_short_side: int = 120
    # Mutual nearest neighbours with cosine similarity above this.
    min_similarity: float = 0.5
    # Coarse-to-fine matching (see matching.py): descriptors are rendered at the centres
    # of render_stride x render_stride blocks of the match grid and matched (mutual NN)
    # to the query map pooled the same way, then refined to the best full-resolution
    # query cell within the block +- refine_margin cells. 1 = the paper's dense
    # mutual-NN matching (all-pairs; ~10x slower on a CPU at 160x120). 4: the flow
    # refinement below sets the precision, the descriptor rounds only need to bring the
    # pose into its basin (on the room, stride 2 in the last round gave the same result
    # at twice the render cost, NOTES.md).
    render_stride: int = 4
    # The render_stride of the iterations before the last (0 = render_stride
    # throughout): a quarter of the cost where the pose is still rough.
    early_render_stride: int = 4
    refine_margin: int = 1
    # Guided matching in the last iteration, when an earlier one gave a pose: the coarse
    # mutual NN runs only over the rendered/query blocks about this many matching-grid
    # cells apart along each axis or less (rounded up to whole blocks, see matching.py),
    # 10% of the 160-cell width: ~4x cheaper than over all pairs at render_stride 2 (6.5
    # vs 27 ms on 2 cores). 0 = over all pairs in every iteration (the paper).
    guided_radius_cells: int = 16
    # Refine each match to sub-cell precision (a parabola through the similarities of
    # the matched cell and its neighbours, per axis). Off: no measured gain with
    # early_render_stride, and the continuous offsets carry last-bit float differences
    # between processes into PnP (the live node then drifts from the offline run).
    subpixel_refinement: bool = False
    render_samples: int = 12  # fine samples per ray when rendering for localization
    # Coarse proposal samples per ray (read from the density grid, no network) when
    # rendering for localization; 0 = the map's sampler.num_coarse (128). 64: the
    # render a third cheaper on a CPU and, over 4 RANSAC seeds, no less accurate
    # (procedural 0.81-0.87 vs 0.92-0.95 cm, fox 1.60-1.74 vs 1.68-1.99 cm median).
    render_coarse_samples: int = 64
    # The descriptor head runs at the k heaviest of them per ray (weights rescaled to the
    # ray's opacity, as train.surface_samples in training); 0 = at every sample.
    render_head_samples: int = 4
    # Rendered pixels with less accumulated opacity than this have no reliable depth.
    min_accumulation: float = 0.5
    max_iterations: int = 2
    # Stop iterating when the pose moved less than both of these.
    converged_translation_rel: float = 0.001  # fraction of the scene extent
    converged_rotation_deg: float = 0.1
    min_matches: int = 20
    min_inliers: int = 12
    # A frame is localized only if at least one descriptor round's PnP reaches this
    # inlier ratio (min_inliers too); otherwise it fails as unsure.
    min_inlier_ratio: float = 0.1
    # A descriptor round whose PnP reaches only this looser ratio is a starting point for
    # the next round (from a prior 0.3-1 m off the first round often has 5-10% inliers
    # and the second, from its estimate, many more), not an estimate: success still
    # needs a round at min_inlier_ratio.
    start_min_inlier_ratio: float = 0.05
    # A result that moves this far from the prior is implausible (fraction of extent).
    max_prior_translation_rel: float = 0.5
    max_prior_rotation_deg: float = 90.0
    # PnP runs in the descriptor-map camera (match_long_side pixels wide), so the
    # reprojection threshold is in matching-grid cells, whatever the image size.
    # 1 cell: measured on the procedural held-out views (priors 0.3 m / 15 deg), 2 cells
    # gave the same median (0.97 cm) but a worst frame of 3.2 cm / 0.92 deg, 1 cell 2.3 cm
    # / 0.66 deg, all 24 localized either way.
    # RANSAC on at most 500 of the matches (the last iteration has ~2000; the refinement
    # and the inliers use all): PnP 19 instead of 27 ms per frame, the same accuracy
    # (procedural 0.87 vs 0.83 cm, fox 1.51 vs 1.40 cm median, seed 0).
    pnp: PnPConfig = default(
        default_factory=lambda: PnPConfig(reprojection_threshold_px=1.0, max_ransac_points=500)
    )
    # Refinement by the map's colours after the descriptor iterations (refinement.py):
    # render RGB and points at the estimate, optical flow (DIS) from the render to the
    # query, PnP; this many rounds (0 = off, the paper's descriptor matching only).
    # Descriptor matches are quantized to matching cells and, on smooth surfaces, often
    # a few cells off; flow is sub-pixel where the image has texture.
    flow_refinement_iterations: int = 3
    # Long side (pixels) of the render and of the query for the flow (the query's own
    # size if smaller).
    flow_refinement_long_side: int = 160
    # Flow is used where the render's grey-level gradient is at least this (levels per
    # pixel, Sobel / 8).
    flow_min_gradient: float = 4.0
    # Flow is used where forward and backward flow agree within this (pixels).
    flow_consistency_px: float = 0.5
    # At most this many flow correspondences go to PnP (a seeded random subset).
    flow_max_points: int = 2000
    # A refinement round is kept only with at least min_inliers and this inlier ratio.
    flow_min_inlier_ratio: float = 0.3
    # PnP of the refinement: threshold in pixels of the refinement camera.
    flow_pnp: PnPConfig = default(
        default_factory=lambda: PnPConfig(reprojection_threshold_px=1.0, max_ransac_points=500)
    )
    # Retrieval prior: global descriptors from CNN maps of this long side (the CNN sees
    # 4x this), of rendered reference views (at build time) and of the query.
    retrieval_long_side: int = 40
    # Without a prior, the best this many retrieved reference views are hypotheses: each
    # gets a first render-match-PnP round and the one with the most inliers goes on
    # (hloc's top-k). 1 = the paper's top-1 retrieval prior.
    retrieval_top_k: int = 3
    # A retrieved view closer than both this (fraction of the scene extent) and
    # retrieval_distinct_deg to a better-ranked hypothesis is skipped (it would give
    # the same first round).
    retrieval_distinct_rel: float = 0.05
    # The rotation half of that test (degrees).
    retrieval_distinct_deg: float = 20.0
    # Retrieved views are verified before they become hypotheses: the best this many by
    # global descriptor are matched to the query by their keyframes (descriptors and 3D
    # points rendered at build time at the centres of keyframe_stride-cell blocks, no
    # rendering at query time) and ranked by PnP inliers; a verified view starts from
    # its PnP pose.
    retrieval_shortlist: int = 20
    # Keyframe block size in matching-grid cells; 0: no keyframes (retrieved views are
    # ranked by global descriptor only).
    keyframe_stride: int = 8
    # PnP of that verification: threshold in matching-grid cells (half a block).
    keyframe_pnp: PnPConfig = default(default_factory=lambda: PnPConfig(reprojection_threshold_px=4.0))
    # Besides the mapping poses, the retrieval index holds each mapping pose panned by
    # these angles (degrees, about the camera's vertical axis), rendered at build time:
    # views where the mapping walk did not look.
    retrieval_extra_yaw_deg: tuple[float, ...] = (-35.0, 35.0)
    # Precision of the query CNN's 3x3 convolutions (its 1x1 head and the normalization
    # stay float32): "float32", "bfloat16", or "auto" (bfloat16 on a CPU with native
    # bfloat16, AMX / AVX512-BF16, float32 elsewhere, CUDA included). On this project's
    # 2-core AMX CPU bfloat16 cuts the CNN from ~115 to ~47 ms at 640x480, and over 4
    # RANSAC seeds it is as accurate as float32: procedural 0.73-0.84 vs 0.87-0.97 cm,
    # fox 1.48-1.72 vs 1.51-1.77 cm median. A bfloat16 head, which rounds the
    # descriptors themselves, cost fox accuracy: up to 2.33 cm median
    cnn_precision: str = "auto"


@dataclass
class CrossfireConfig:
    map: NeuralMapConfig = default(default_factory=NeuralMapConfig)
    descriptor: DescriptorConfig = default(default_factory=DescriptorConfig)
    loss: CrossfireLossConfig = default(default_factory=CrossfireLossConfig)
    train: CrossfireTrainConfig = default(default_factory=CrossfireTrainConfig)
    localization: LocalizationConfig = default(default_factory=LocalizationConfig)
