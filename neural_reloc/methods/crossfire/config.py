"""CROSSFIRE configuration, defaults in one place (mirrored by config/crossfire.yaml).

Moreau et al., "CROSSFIRE: Camera Relocalization On Self-Supervised Features from an
Implicit Representation" (../shared/papers/crossfire.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...config_fields import setting, with_default
from ...device import PRECISIONS
from ...geometry.pnp import PnPConfig
from ..common.config import KEYFRAME_RANSAC_ITERATIONS, RenderingLocalizationConfig
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
    # Build: where the mapping images are smaller than 4x this (or the matching grid,
    # localization.match_long_side/short_side) the CNN would see them upsampled, which
    # adds no detail and costs 4x the convolutions of their own size. The build then
    # shrinks image_long_side and the matching grid to a quarter of the images' size and
    # the localization's block sizes in matching-grid cells by the same factor
    # (trainer.fit_to_mapping_images); the map stores the fitted values.
    fit_to_small_images: bool = True
    # Weight of the view crop's photometric/geometric terms (L_MSE, lambda1 L_DSSIM,
    # lambda2 L_TV) relative to the paper's 1. Off by default on CPU budgets (they pull
    # the shared grid toward one crop per step: NOTES.md); 1 is the paper's objective
    # for long (GPU) runs.
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
    # paper's joint training. Off by default (on short CPU budgets it wrecks the
    # geometry: NOTES.md): the descriptor losses then train the head and the CNN only.
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


_CELLS = (0, 4096)
#: The descriptor rounds stop RANSAC at the textbook count (dyn_num_trials_mult 1, not
#: poselib's 3): each round re-matches from the last estimate, so a round's RANSAC need
#: not be as sure as a one-shot PnP (NOTES.md).
_PNP_IN_CELLS = PnPConfig(reprojection_threshold_px=1.0, max_ransac_points=500, dyn_num_trials_mult=1.0)


@dataclass
class LocalizationConfig(RenderingLocalizationConfig):
    """CROSSFIRE's localization settings (measurements behind the defaults: NOTES.md)."""

    hypothesis_accept_inlier_ratio: float = with_default(
        RenderingLocalizationConfig, "hypothesis_accept_inlier_ratio", 0.1)

    match_long_side: int = setting(
        160, "Long side of the matching resolution of rendered and extracted descriptor maps; the query image "
        "is resized to 4x this for the CNN. A map built from smaller images stores a quarter of their size "
        "(loss.fit_to_small_images), so that the CNN never sees an upsampled image.", range=(8, 4096),
    )
    match_short_side: int = setting(120, "Short side of the matching resolution (see match_long_side).",
                                    range=(8, 4096))
    min_similarity: float = setting(0.5, "Mutual nearest neighbours need a cosine similarity above this.",
                                    range=(-1.0, 1.0))
    render_stride: int = setting(
        4, "Coarse-to-fine matching: descriptors are rendered at the centres of render_stride x render_stride "
        "blocks of the match grid, matched (mutual NN) to the query map pooled the same way, then refined to "
        "the best full-resolution query cell of the block +- refine_margin. 1: the paper's dense mutual NN.",
        range=(1, 64),
    )
    early_render_stride: int = setting(
        4, "The render_stride of the rounds before the last (0: render_stride throughout).", range=(0, 64)
    )
    refine_margin: int = setting(
        1, "Coarse-to-fine matching: a coarse match is refined to the best full-resolution query cell within "
        "its block +- this many cells.", range=_CELLS,
    )
    guided_radius_cells: int = setting(
        16, "Guided matching in the last round (and the unverified rounds after it), when an earlier one gave a pose: the coarse mutual NN runs only "
        "over rendered/query blocks at most this many matching-grid cells apart along each axis (0: all pairs "
        "in every round, the paper).", range=_CELLS,
    )
    subpixel_refinement: bool = setting(
        False, "Refine each match to sub-cell precision (a parabola through the similarities of the matched "
        "cell and its neighbours, per axis)."
    )
    pnp: PnPConfig = setting(
        _PNP_IN_CELLS, "PnP + RANSAC of the descriptor rounds. It runs in the descriptor-map camera "
        "(match_long_side pixels wide): the reprojection threshold is in matching-grid cells.",
    )
    retrieval_long_side: int = setting(
        40, "Retrieval prior: global descriptors from CNN maps of this long side (the CNN sees 4x this), of "
        "rendered reference views (at build time) and of the query.", range=(8, 4096),
    )
    keyframe_stride: int = setting(
        8, "Keyframe block size in matching-grid cells (0: no keyframes; retrieved views are ranked by global "
        "descriptor only). Takes effect when the map is built.", range=(0, 4096),
    )
    keyframe_pnp: PnPConfig = setting(
        PnPConfig(reprojection_threshold_px=4.0, max_iterations=KEYFRAME_RANSAC_ITERATIONS),
        "PnP of the keyframe verification: threshold in matching-grid cells (half a block). At most 4000 RANSAC "
        "iterations: most shortlisted views fail (6-10 inliers of ~110 matches) and run to the cap; 12 inliers "
        "of 110 are still found 99.4% of the time (NOTES.md, eighth session).",
    )
    cnn_precision: str = setting(
        "auto", "Precision of the query CNN's 3x3 convolutions (its 1x1 head and the normalization stay "
        "float32): float32, bfloat16, or auto (bfloat16 on a CPU with native bfloat16, AMX / AVX512-BF16; "
        "float32 elsewhere, CUDA included).", choices=PRECISIONS,
    )


@dataclass
class CrossfireConfig:
    map: NeuralMapConfig = default(default_factory=NeuralMapConfig)
    descriptor: DescriptorConfig = default(default_factory=DescriptorConfig)
    loss: CrossfireLossConfig = default(default_factory=CrossfireLossConfig)
    train: CrossfireTrainConfig = default(default_factory=CrossfireTrainConfig)
    localization: LocalizationConfig = default(default_factory=LocalizationConfig)
