"""Configuration of the neural map (field, sampling, training), defaults in one place.

Mirrored 1:1 by ``config/neural_map.yaml``; ``test/test_config_yaml.py`` keeps the two
in sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ..sfm.config import FlowStereoConfig, PlainRegionsConfig


@dataclass
class EncodingConfig:
    """Multi-resolution grid encoding of position.

    ``kind="grid"`` (default): dense 3D levels (exactly Instant-NGP's non-hashed levels),
    optionally plus factorized tri-plane levels for fine colour detail (K-Planes; they
    feed colour only, never density). Everything is trilinear/bilinear ``grid_sample`` so
    it is fast on CPU and CUDA. Dense-only is the default: in our indoor tests planes
    bought a little PSNR and cost geometry (floaters along plane-aligned rays).
    ``kind="hash"``: Instant-NGP's multiresolution hash encoding in plain PyTorch
    (slower on CPU, see docs/ARCHITECTURE.md).
    """

    kind: str = "grid"
    dense_resolutions: tuple[int, ...] = (16, 32, 64, 128)
    dense_features: int = 4
    plane_resolutions: tuple[int, ...] = ()
    plane_features: int = 8
    # hash encoding
    hash_levels: int = 16
    hash_features: int = 2
    hash_log2_table_size: int = 19
    hash_base_resolution: int = 16
    hash_max_resolution: int = 2048


@dataclass
class FieldConfig:
    encoding: EncodingConfig = default(default_factory=EncodingConfig)
    hidden_dim: int = 64
    geo_feat_dim: int = 15
    color_hidden_dim: int = 64
    color_layers: int = 2
    direction_sh_degree: int = 4
    appearance_dim: int = 8  # per-image NeRF-W embedding; 0 disables it
    density_bias: float = -1.0  # initial pre-activation bias: starts nearly transparent


@dataclass
class SceneConfig:
    """How world coordinates map to the field's [0, 1]^3 domain.

    ``mode="auto"``: "bounded" when the dataset gives an axis-aligned box (``aabb``),
    else "contracted" (mip-NeRF 360 style contraction, L-inf norm, of a sphere around
    the cameras' common focus point).
    """

    mode: str = "auto"
    aabb_margin: float = 0.05  # fraction of the box size added on each side (bounded)
    inner_radius_scale: float = 1.0  # contracted: inner radius = scale * median cam dist
    near_m: float = 0.05  # nearest sample distance along a ray, metres (world units)


@dataclass
class SamplerConfig:
    """Ray sampling with a cached density grid as proposal (occupancy-grid family).

    Coarse stratified samples read a dilated, max-pooled density grid (no network);
    the fine samples the network sees are drawn from the resulting weights.
    """

    grid_resolution: int = 128
    num_coarse: int = 128
    num_fine: int = 48
    grid_update_every: int = 16
    grid_warmup_steps: int = 256  # keep the grid uniform this long
    grid_decay: float = 0.95
    grid_cells_per_update: int = 131072
    grid_dilation: int = 0  # cells of max-filter dilation (>0 front-loads samples before surfaces)
    proposal_cell_optical_depth: float = 0.25  # cap of sigma*cell_size in the proposal
    grid_prune_optical_depth: float = 0.05  # sigma*cell_size below this: empty cell
    pdf_padding: float = 0.01  # weight mixed uniformly into the proposal pdf
    # Contracted scenes: far plane in units of the inner radius.
    far_contracted: float = 200.0


@dataclass
class NeRFTrainConfig:
    steps: int = 3000
    rays_per_batch: int = 4096
    lr_grid: float = 3e-2
    lr_mlp: float = 1e-2
    lr_final_factor: float = 0.05  # exponential decay to lr * this at the last step
    weight_decay_mlp: float = 1e-6
    appearance_lr: float = 3e-3
    plane_tv_weight: float = 1e-4
    distortion_weight: float = 1e-2  # mip-NeRF 360 distortion loss (floaters)
    empty_space_weight: float = 1e-2  # optical depth of points in pruned grid cells
    # RegNeRF-style depth smoothness on patches seen from virtual in-between views.
    virtual_depth_tv_weight: float = 1.0
    virtual_patches: int = 16
    virtual_patch_size: int = 8
    empty_space_samples: int = 4096
    max_image_size: int = 480  # long side of training images, pixels
    checkpoint_every: int = 500
    eval_every: int = 0  # 0: only at the end
    # 0: no budget; else stop when exceeded (the lr schedule then decays over the budget)
    time_budget_s: float = 0.0
    seed: int = 0
    background: str = "random"  # colour behind non-opaque rays while training
    # Depth supervision, used only when the training data has metric depth (RGB-D
    # captures, 7-Scenes, nerfstudio's depth_file_path; pixels without a measurement
    # are skipped). Data without depth trains photometrically whatever these say.
    use_depth: bool = True  # false: ignore the data's depth (RGB-only training on the same data)
    # Expected-depth term: Huber distance between the rendered and the measured
    # distance along each ray, in units of the scene extent (averaged over rays with
    # a measurement inside the sampled range).
    depth_weight: float = 0.1
    depth_huber_delta: float = 0.01  # scene-extent fraction where the Huber loss turns from quadratic to linear
    # Line-of-sight (free-space) term, as Urban Radiance Fields' L_sight: the opacity
    # rendered by samples well in front of the measured surface (averaged over rays
    # with a measurement). Trims floaters in front of surfaces (the tail of the depth
    # error); larger weights cost photometric detail.
    free_space_weight: float = 0.01
    # Samples ending within this fraction of the measured distance in front of the
    # surface are exempt from the free-space term (depth noise, surface thickness).
    free_space_margin: float = 0.05
    # Without depth images (or with use_depth false): supervise the depth at SIFT
    # keypoints triangulated from the known poses (the classical pipeline's points, as
    # DS-NeRF does with COLMAP's), with the two terms above. Photometric training alone
    # leaves the geometry of plain or rarely seen surfaces free (fog near the cameras).
    keypoint_depth: bool = True
    # Rays per step drawn from the keypoint pixels for those terms (~1% of the pixels:
    # the random photometric batch alone would rarely hit them).
    keypoint_depth_rays: int = 1024
    # With keypoint_depth: also measure the depth of every textured pixel by optical flow
    # to the nearest mapping views, triangulated with the known poses and kept where two
    # views agree (sfm/flow_stereo.py, settings in flow_stereo); where it measured a
    # pixel it stands in for a keypoint's. The edges between SIFT's corners are where a
    # localizer's flow lands (NOTES.md, twenty-third session).
    flow_stereo_depth: bool = True
    flow_stereo: FlowStereoConfig = default(default_factory=FlowStereoConfig)
    # With keypoint_depth: the plain pixels inside the hull of their region's measured
    # border are free space up to the smallest depth measured on that border (a bound,
    # not a depth: sfm/plain_regions.py, settings in plain_regions), with the free-space
    # term on rays of their own. Photometric training alone renders a plain wall as a
    # slab of its colour anywhere in front of it (NOTES.md, twenty-fifth session).
    plain_free_space: bool = True
    plain_free_space_rays: int = 1024
    plain_regions: PlainRegionsConfig = default(default_factory=PlainRegionsConfig)


@dataclass
class NeuralMapConfig:
    field: FieldConfig = default(default_factory=FieldConfig)
    scene: SceneConfig = default(default_factory=SceneConfig)
    sampler: SamplerConfig = default(default_factory=SamplerConfig)
    train: NeRFTrainConfig = default(default_factory=NeRFTrainConfig)
