"""Classical structure-based relocalization (hloc-style baseline, no learned weights).

The map is a sparse SIFT point cloud triangulated from the KNOWN mapping poses; a query
is localized by VLAD retrieval (or its prior), SIFT matching, 2D-3D correspondences and
PnP + RANSAC. One step per file:

* ``features.py``      SIFT (pycolmap) + RootSIFT; keypoint pixel convention
* ``pairs.py``         which views to match, from their poses
* ``matching.py``      mutual NN + ratio test; epipolar verification with known poses
* ``tracks.py``        tracks from verified matches (connected components)
* ``triangulation.py`` multi-view triangulation + filters
* ``retrieval.py``     k-means vocabulary, VLAD, top-k by cosine
* ``storage.py``       the map's tensors in a map bundle
* ``build.py``         the mapping pipeline (``build-map --method classical``)
* ``relocalizer.py``   ``ClassicalRelocalizer``: retrieve, match, PnP
* ``config.py``        every setting, defaults in one place (config/classical.yaml)
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
