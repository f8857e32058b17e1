"""CROSSFIRE: relocalization on self-supervised features from an implicit representation.

Moreau et al. (../shared/papers/crossfire.md). One model per file:

* ``descriptor_head.py``   the position-only descriptor head of the neural field
* ``feature_extractor.py`` the 8-layer CNN (H/4 x W/4 x D unit descriptors)
* ``losses.py``            eq. (3): MSE, DSSIM, depth TV, L_pos, L_neg
* ``trainer.py``           joint self-supervised training (``build-map --method crossfire``)
* ``retrieval.py``         the map-only retrieval prior
* ``matching.py``          mutual-NN descriptor matching (coarse-to-fine on CPU)
* ``relocalizer.py``       render -> match -> PnP + RANSAC, iterated
* ``config.py``            every hyperparameter, defaults in one place
"""

from __future__ import annotations

from ..registry import MethodSpec, register
from .config import CrossfireConfig
from .relocalizer import CrossfireRelocalizer, make_relocalizer
from .trainer import CrossfireTrainer, attach_descriptor_head


def _attach_heads(model, config: dict) -> None:
    from ...config_io import from_dict

    attach_descriptor_head(model, from_dict(CrossfireConfig, config))


register(
    MethodSpec(
        name="crossfire",
        description="CROSSFIRE: NeRF descriptor field + CNN, dense matching, PnP, iterated",
        config_factory=CrossfireConfig,
        trainer_factory=CrossfireTrainer,
        relocalizer_factory=make_relocalizer,
        map_config=lambda cfg: cfg.map,
        attach_heads=_attach_heads,
    )
)

__all__ = ["CrossfireConfig", "CrossfireRelocalizer", "CrossfireTrainer"]
