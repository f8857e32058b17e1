"""PoseMap configuration, defaults in one place (mirrored by config/posemap.yaml).

Lin et al., "Learning Neural Volumetric Pose Features for Camera Localization"
(../shared/papers/posemap.md). The paper's sizes are for a GPU (VGG-16 backbone,
256-d PoseMap, 480x854 images); the defaults here are CPU-sized (see NOTES.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default

from ...config_fields import setting
from ...nerf.config import NeuralMapConfig

_POS = (1e-9, 1e9)
_COUNT = (0, 1_000_000)


@dataclass
class PoseBranchConfig:
    """NeRF-P: the pose-feature head on the frozen field and its decoder (Sec. 3.2)."""

    dim: int = setting(32, "k: dimension of the per-point pose feature and of the PoseMap (the paper: 256).",
                       range=(1, 4096))
    head_hidden: int = setting(64, "Hidden width of the pose-feature head's MLP.", range=(1, 4096))
    head_layers: int = setting(2, "Hidden layers of the pose-feature head's MLP.", range=(0, 16))
    grid_long_side: int = setting(
        16, "PoseMaps are rendered at this many rays along the image's long side (the paper renders at full "
        "size and downsamples by 16).", range=(2, 1024))
    decoder_pool: tuple[int, ...] = setting((6, 8), "Rows and columns the PoseMap is average-pooled to before the "
                                 "decoder flattens it.", range=(1, 256))
    decoder_hidden: tuple[int, ...] = setting((256, 128), "Hidden widths of the decoder's MLP (the paper: 1536, 256, "
                                   "128).", range=(1, 65536))
    render_samples: int = setting(16, "Fine samples per ray when rendering PoseMaps.", range=(1, 1024))
    steps: int = setting(600, "Training steps of the head and decoder (the field stays frozen).", range=_COUNT)
    batch: int = setting(8, "Poses per step (training views, each perturbed as below).", range=(1, 4096))
    lr: float = setting(2e-3, "Adam learning rate of the head and decoder.", range=_POS)
    perturb_translation_rel: float = setting(
        0.05, "Training poses are moved up to this fraction of the scene extent (uniform) so the branch "
        "covers the space around the mapping views.", range=(0.0, 1e9))
    perturb_rotation_deg: float = setting(10.0, "... and rotated up to this many degrees.", range=(0.0, 180.0))


@dataclass
class AprConfig:
    """APR-Net: a small CNN from scratch, a pose head and a DFNet-style fused feature branch."""

    image_long_side: int = setting(
        128, "Long side of the image APR-Net sees (training and localization), rounded to a multiple of "
        "16.", range=(16, 4096))
    channels: tuple[int, ...] = setting((16, 32, 64, 128), "Channels of the four conv blocks (two 3x3 convolutions "
                             "and a 2x2 max-pool each).", range=(1, 4096))
    head_hidden: int = setting(128, "Hidden width of the pose head (after global average pooling).",
                               range=(1, 65536))
    feature_dim: int = setting(32, "Channels of the fused feature map (blocks 2-4 projected, upsampled to "
                               "block 2's resolution and summed, L2-normalized).", range=(1, 4096))


@dataclass
class AprTrainConfig:
    steps: int = setting(800, "APR-Net training steps.", range=_COUNT)
    batch: int = setting(8, "Real views per step (and as many random view syntheses).", range=(1, 4096))
    lr: float = setting(1e-3, "Adam learning rate (trained from scratch; the paper fine-tunes VGG at 1e-4).",
                        range=_POS)
    lr_final_factor: float = setting(0.1, "Learning rate at the end, as a factor (exponential decay).",
                                     range=(1e-6, 1.0))
    pose_weight: float = setting(1.0, "Weight of L_pose (L2 of normalized position + rotation matrix).",
                                 range=(0.0, 1e9))
    image_weight: float = setting(1.0, "Weight of L_image (triplet: APR features of the real image vs the "
                                  "map's render at the true pose, another view's render as negative).",
                                  range=(0.0, 1e9))
    posemap_weight: float = setting(1.0, "Weight of L_posemap (cosine distance of the PoseMaps at the "
                                    "predicted and the true pose).", range=(0.0, 1e9))
    rvs_weight: float = setting(1.0, "Weight of L_rvs (eq. 1: pose and PoseMap losses on renders at "
                                "randomly perturbed poses).", range=(0.0, 1e9))
    rotation_weight: float = setting(1.0, "Inside the pose losses: weight of the rotation-matrix term "
                                     "against the normalized position term.", range=(0.0, 1e9))
    triplet_margin: float = setting(0.5, "Margin of the L_image triplet loss (cosine distances).",
                                    range=(0.0, 2.0))
    rvs_per_view: int = setting(4, "Random view syntheses rendered (once, cached) per training view.",
                                range=(0, 1000))
    validation_per_view: int = setting(1, "Further renders per view at perturbed poses, never trained on: "
                                       "the validation error behind the covariance.", range=(0, 1000))
    rvs_translation_rel: float = setting(
        0.025, "RVS poses move up to this fraction of the scene extent (uniform; the paper: 0.2 m indoors).",
        range=(0.0, 1e9))
    rvs_rotation_deg: float = setting(10.0, "RVS poses rotate up to this many degrees (the paper: 10 "
                                      "indoors).", range=(0.0, 180.0))
    render_samples: int = setting(24, "Fine samples per ray of the cached RGB renders.", range=(1, 1024))
    photometric_jitter: float = setting(0.1, "Random gain and offset of the real images' brightness.",
                                        range=(0.0, 1.0))
    time_budget_s: float = setting(0.0, "Wall-clock budget of APR training (0: none).", range=(0.0, 1e9))
    seed: int = setting(0, "Seed of perturbations, batches and initialization.", range=(0, 2**31 - 1))


@dataclass
class AlignConfig:
    """Self-supervised alignment with unlabeled images (Sec. 3.3, ``--unlabeled``)."""

    steps: int = setting(200, "Alignment steps in all (split evenly over the rounds).", range=_COUNT)
    rounds: int = setting(2, "Each round predicts every unlabeled image's pose and renders the map there "
                          "(image I' and its PoseMap, cached for the round's steps).", range=(1, 1000))
    batch: int = setting(4, "Unlabeled images per step.", range=(1, 4096))
    lr: float = setting(1e-4, "Adam learning rate (the paper: 1e-5 at batch 1).", range=_POS)
    image_weight: float = setting(1.0, "Weight of L_image in L_align (eq. 5).", range=(0.0, 1e9))
    posemap_weight: float = setting(1.0, "Weight of L_posemap in L_align (eq. 5).", range=(0.0, 1e9))
    dataset_split: str = setting("test", "When --unlabeled is a posed dataset: the split whose images are "
                                 "used (their poses are never read); 'all' for every image.")
    max_images: int = setting(0, "Use at most this many unlabeled images, evenly spaced (0: all).",
                              range=_COUNT)
    teacher: str = setting(
        "", "A matching method of the map (e.g. 'crossfire') that first localizes each unlabeled image from "
        "its own retrieval (no pose given). Its fixes replace APR-Net's predictions as the poses the alignment "
        "renders at (eq. 5's terms) and add L_pose towards them (teacher_pose_weight); images it does not "
        "localize are left out. '': the paper's alignment, at APR-Net's own predictions (it confirms them, "
        "right or wrong: on the rooms' query walks, where APR-Net is ~1 m off, it made it worse).")
    teacher_steps: int = setting(800, "With a teacher: alignment steps (instead of steps; one round: the "
                                 "teacher's poses do not move).", range=_COUNT)
    teacher_lr: float = setting(3e-4, "With a teacher: Adam learning rate (instead of lr).", range=_POS)
    teacher_pose_weight: float = setting(1.0, "With a teacher: weight of L_pose between APR-Net's prediction "
                                         "for the real image and the teacher's pose.", range=(0.0, 1e9))
    teacher_labelled_batch: int = setting(
        4, "With a teacher: mapping images (with their poses) added to each step's L_pose beside the taught "
        "ones, so that APR-Net keeps what it learned from them. 0: the taught images alone.", range=_COUNT)
    teacher_holdout_every: int = setting(
        4, "With a teacher: every k-th localized image is kept out of the alignment; APR-Net's error on those, "
        "against the teacher's pose, joins the validation error behind the covariance (per axis the larger of "
        "it and the renders'): real images off the mapping path, where renders near it understate the error. "
        "0: none kept out.", range=_COUNT)


@dataclass
class LocalizationConfig:
    """PoseMap's localization: one APR-Net forward pass, no prior, no rendering."""

    covariance_scale: float = setting(
        4.0, "The covariance is the validation error's per-axis variance times this (the validation "
        "views are renders; real images err more).", range=(0.0, 1e9))
    min_position_std_rel: float = setting(
        0.005, "Position standard deviation at least this fraction of the scene extent.", range=(0.0, 1e9))
    min_rotation_std_deg: float = setting(1.0, "Rotation standard deviation at least this (degrees).",
                                          range=(0.0, 180.0))
    bounds_margin_rel: float = setting(
        0.1, "A pose is plausible (success) when the camera centre lies in the box of the mapping cameras' "
        "centres grown by this fraction of the scene extent.", range=(0.0, 1e9))


@dataclass
class PoseMapConfig:
    map: NeuralMapConfig = default(default_factory=NeuralMapConfig)
    posemap: PoseBranchConfig = default(default_factory=PoseBranchConfig)
    apr: AprConfig = default(default_factory=AprConfig)
    train: AprTrainConfig = default(default_factory=AprTrainConfig)
    align: AlignConfig = default(default_factory=AlignConfig)
    localization: LocalizationConfig = default(default_factory=LocalizationConfig)

    def __post_init__(self) -> None:
        if len(self.posemap.decoder_pool) != 2:
            raise ValueError(f"posemap.decoder_pool must be [rows, cols], got {self.posemap.decoder_pool}")
        if not self.apr.channels:
            raise ValueError("apr.channels must name at least one block")


__all__ = ["AlignConfig", "AprConfig", "AprTrainConfig", "LocalizationConfig", "PoseBranchConfig", "PoseMapConfig"]
