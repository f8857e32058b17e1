"""Descriptor synthesis (Bui et al., "Leveraging Neural Radiance Field in Descriptor
Synthesis for Keypoints Scene Coordinate Regression"): render the views a sparse
capture misses from the neural map, keep the ones whose features match their reference
views, and write keypoints, descriptors and 3D coordinates for a keypoint
scene-coordinate regressor to train on.

Steps, one module each: :mod:`.poses` (new poses between nearest training cameras),
:mod:`.render` (RGB and keypoint depth from the map), :mod:`.features` (pluggable
extractor + matcher), :mod:`.real_views` and :mod:`.synthetic_views` (what each view
keeps), :mod:`.pipeline` (``synthesize``, resumable), :mod:`.views` (the files and
``load_views``), :mod:`.cli` (``neural-reloc synthesize``).
"""

from .config import SynthesisConfig
from .features import make_extractor, make_matcher
from .pipeline import synthesize
from .views import KeypointView, ViewFileError, load_views

__all__ = ["KeypointView", "SynthesisConfig", "ViewFileError", "load_views", "make_extractor", "make_matcher",
           "synthesize"]
