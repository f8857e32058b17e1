"""PoseMap: a pose regressor guided by the map's volumetric pose features.

Lin et al. (../shared/papers/posemap.md). A component on a map's frozen field
(``neural-reloc add-method posemap --map M --data D [--unlabeled DIR_OR_BAG]``); one
model per file:

* ``pose_branch.py``  NeRF-P: the pose-feature head on the field, the PoseMap render (eq. 3-4), its decoder
* ``apr_net.py``      APR-Net: CNN, pose head (centre + 6D rotation), DFNet-style fused features
* ``pose_repr.py``    the regressed pose (6D rotation, centre normalization)
* ``losses.py``       L_pose, L_image (triplet), L_posemap (cosine), L_rvs's PoseMap term
* ``training.py``     the stages: pose branch, cached renders, APR-Net, validation error
* ``alignment.py``    self-supervised alignment with unlabeled images (Sec. 3.3)
* ``unlabeled.py``    unlabeled images from a folder, a dataset or a bag
* ``trainer.py``      the component's build (weights saved and loaded here)
* ``relocalizer.py``  one forward pass -> pose + covariance; ``predict_w2c_opencv`` for priors
* ``ablation.py``     the paper's Table 5 on one map (``scripts/ablate_posemap.sh``)
* ``config.py``       every setting, defaults in one place (config/posemap.yaml)
"""

from __future__ import annotations

from ..registry import MethodSpec, register
from .config import LocalizationConfig, PoseMapConfig
from .relocalizer import PoseMapRelocalizer, make_relocalizer
from .trainer import PoseMapTrainer, add_to_map, attach_heads

register(
    MethodSpec(
        name="posemap",
        description="PoseMap: absolute pose regression guided by the map's volumetric pose features (no prior)",
        config_factory=PoseMapConfig,
        trainer_factory=PoseMapTrainer,
        relocalizer_factory=make_relocalizer,
        localization_config=LocalizationConfig,
        map_config=lambda cfg: cfg.map,
        attach_heads=attach_heads,
        add_to_map=add_to_map,
    )
)

__all__ = ["PoseMapConfig", "PoseMapRelocalizer", "PoseMapTrainer"]
