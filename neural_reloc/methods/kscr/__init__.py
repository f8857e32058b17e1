"""KSCR: descriptor synthesis with the map + D2S keypoint scene-coordinate regression.

Bui et al. (../shared/papers/descriptor-synthesis.md), on D2S. The map renders views
between the mapping cameras (:mod:`neural_reloc.synthesis`), a feature matcher keeps the
renders that match their real neighbours, and D2S learns the scene coordinates of real
and synthetic keypoints. Localization needs no prior (a kidnapped robot relocalizes
from one image), so it is also the global prior of the map-rendering methods. Added to
any map with a field (``neural-reloc add-method kscr``). One model per file:

* ``model.py``       D2S: attention over an image's keypoints, MLP to (x, y, z, reliability)
* ``losses.py``      scene-coordinate, reliability and reprojection losses
* ``training.py``    batches of real and synthetic keypoint views, the loop
* ``trainer.py``     the component's build (field, synthesis, D2S; reruns skip finished steps)
* ``relocalizer.py`` keypoints -> coordinates -> the reliable ones -> PnP
* ``config.py``      every setting, defaults in one place (config/kscr.yaml)
"""

from __future__ import annotations

from ..registry import MethodSpec, register
from .config import KscrConfig, LocalizationConfig
from .relocalizer import KscrRelocalizer, make_relocalizer
from .trainer import KscrTrainer, add_to_map

register(
    MethodSpec(
        name="kscr",
        description="descriptor synthesis with the map + D2S keypoint scene-coordinate regression, PnP; no prior needed",
        config_factory=KscrConfig,
        trainer_factory=KscrTrainer,
        relocalizer_factory=make_relocalizer,
        localization_config=LocalizationConfig,
        map_config=lambda cfg: cfg.map,
        add_to_map=add_to_map,
    )
)

__all__ = ["KscrConfig", "KscrRelocalizer", "KscrTrainer"]
