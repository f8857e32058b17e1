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
from .config import CrossfireConfig, LocalizationConfig
from .relocalizer import CrossfireRelocalizer, make_relocalizer
from .trainer import CrossfireTrainer, attach_descriptor_head, fit_to_mapping_images


def _add_to_map(bundle, data, cfg: CrossfireConfig, device, work_dir, progress=None, log=print,
                reuse_trained: bool = False):
    """CROSSFIRE on an existing map's frozen field (``add-method crossfire``): the staged
    schedule's CNN and descriptor-head stages, then the retrieval index; ``reuse_trained``:
    the CNN and head the map's component holds are kept and only the index is rebuilt
    (:func:`_stale_component`)."""
    import dataclasses

    from ...config_io import from_dict
    from ...nerf.config import NeuralMapConfig

    t = cfg.train
    if t.schedule != "staged" or t.descriptor_grad_to_field:
        raise ValueError("add-method crossfire trains on the map's frozen field: it needs train.schedule=staged "
                         "and train.descriptor_grad_to_field=false")
    cfg = dataclasses.replace(cfg, map=from_dict(NeuralMapConfig, bundle.manifest["field"]["config"]))
    trainer = CrossfireTrainer(data, cfg, device, work_dir, progress=progress, log=log)
    trainer.adopt_field(bundle)
    if reuse_trained:
        trainer.reuse_descriptors(bundle)
    trainer.fit()
    return trainer.modules_to_save(), {}


def _stale_component(bundle, cfg: CrossfireConfig) -> str:
    """Why a map's CROSSFIRE component built with ``cfg`` needs its index rebuilt ("" if
    not): :func:`~..common.retrieval.stale_index`."""
    from ..common.retrieval import stale_index

    return stale_index(bundle, cfg.localization, "retrieval")


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
        localization_config=LocalizationConfig,
        map_config=lambda cfg: cfg.map,
        attach_heads=_attach_heads,
        add_to_map=_add_to_map,
        stale_component=_stale_component,
        fit_config=fit_to_mapping_images,
    )
)

__all__ = ["CrossfireConfig", "CrossfireRelocalizer", "CrossfireTrainer"]
