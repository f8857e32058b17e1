"""NeRFMatch: matching image features to the NeRF's own internal features.

Zhou et al. (../shared/papers/nerfmatch.md). The map's field is used as it is: its
features, rendered at 3D points, are matched to a learned image encoder's features, so
NeRFMatch is added to any existing map (``neural-reloc add-method nerfmatch``). Two
variants (``matcher.variant``): NeRFMatch-Mini, the default (cosine similarities, dual
softmax, mutual matches, Sec. 4.1), and the full NeRFMatch (attention before the dual
softmax, then a fine stage placing each match inside its cell, Sec. 4.2); one model per
file:

* ``nerf_features.py`` NeRF features and points at patch centres (eq. 2)
* ``encoder.py``       the image encoder (coarse map H/8; full: fine map H/2) and the NeRF
  feature projection
* ``matcher.py``       dual softmax, mutual matches, the coarse loss L_c (eq. 3)
* ``attention.py``     full: positional encodings (2D, NeRF's), linear / softmax attention
* ``coarse_matcher.py`` full: self- and cross-attention of image cells and NeRF points
* ``fine_matcher.py``  full: windows of the fine map, heatmap expectation, L_f (eq. 4)
* ``training.py``      training pairs from the map's own views, ground truth, the loop
* ``trainer.py``       the component's build (field, matcher, retrieval index)
* ``relocalizer.py``   retrieval -> render -> match -> PnP, iterated, flow refinement
* ``config.py``        every setting, defaults in one place (config/nerfmatch.yaml)
"""

from __future__ import annotations

from ..registry import MethodSpec, register
from .config import LocalizationConfig, NerfMatchConfig
from .relocalizer import NerfMatchRelocalizer, make_relocalizer
from .trainer import NerfMatchTrainer, add_to_map, stale_component

register(
    MethodSpec(
        name="nerfmatch",
        description="NeRFMatch (Mini, or full with matcher.variant=full): image features matched to the NeRF's "
        "own rendered features, PnP, iterated",
        config_factory=NerfMatchConfig,
        trainer_factory=NerfMatchTrainer,
        relocalizer_factory=make_relocalizer,
        localization_config=LocalizationConfig,
        map_config=lambda cfg: cfg.map,
        add_to_map=add_to_map,
        stale_component=stale_component,
    )
)

__all__ = ["NerfMatchConfig", "NerfMatchRelocalizer", "NerfMatchTrainer"]
