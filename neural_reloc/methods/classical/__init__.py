"""Classical structure-based relocalization (hloc-style baseline, no learned weights).

The map is a sparse SIFT point cloud triangulated from the KNOWN mapping poses; a query
is localized by VLAD retrieval (or its prior), SIFT matching, 2D-3D correspondences and
PnP + RANSAC. SIFT, pairs, matching, tracks and triangulation from known poses are
shared with the neural map and descriptor synthesis, in :mod:`neural_reloc.sfm`. One
step per file here:

* ``retrieval.py``     k-means vocabulary, VLAD, top-k by cosine
* ``storage.py``       the map's tensors in a map bundle
* ``build.py``         the mapping pipeline (``build-map --method classical``)
* ``relocalizer.py``   ``ClassicalRelocalizer``: retrieve, match, PnP
* ``config.py``        every setting, defaults in one place (config/classical.yaml;
                       the SIFT, matching and triangulation sections are :mod:`neural_reloc.sfm.config`)
"""

from __future__ import annotations

from ..registry import MethodSpec, register
from .build import build_classical_map
from .config import ClassicalConfig, LocalizationConfig
from .relocalizer import ClassicalRelocalizer, make_relocalizer

register(
    MethodSpec(
        name="classical",
        description="structure-based baseline (hloc-style): SIFT, triangulation from known poses, VLAD retrieval, PnP",
        config_factory=ClassicalConfig,
        build=build_classical_map,
        relocalizer_factory=make_relocalizer,
        localization_config=LocalizationConfig,
    )
)

__all__ = ["ClassicalConfig", "ClassicalRelocalizer", "build_classical_map"]
