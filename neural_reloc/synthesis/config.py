"""Settings of the descriptor-synthesis pipeline (``neural_reloc.synthesis``): one
dataclass per step, gathered in :class:`SynthesisConfig` (self-contained, so a method's
config can embed it as a section, e.g. ``synthesis``).

The match threshold ``filter.min_matches`` (the paper's eta) is an absolute count of a
synthetic view's keypoints matched to its reference views. The paper's 500 is for
SuperPoint + LightGlue with 2048 keypoints at 640x480 (about a quarter of the budget).
Here the default is for ~1024 keypoints at 160-320 px wide with SIFT + mutual NN + ratio
test. Scaling eta by the budget alone (500 * 1024 / 2048 = 250) is far too high for
such images: plain indoor walls at 320x240 give SIFT a few hundred keypoints, and
SIFT + ratio test matches a smaller share of them than LightGlue does; even a render
at a real view's own pose matches only a few dozen of that view's keypoints on the
test room (NOTES.md has the measured counts). Rescale it with keypoint count and
resolution when changing either.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config_fields import setting

_COUNT = (0, 1_000_000)


@dataclass
class PoseSynthesisConfig:
    """Sec. III-B: new poses on the segments between each training camera and its nearest ones."""

    num_neighbors: int = setting(3, "Each training camera is paired with this many nearest training cameras by "
                                 "camera-centre distance (the paper's k).", range=(1, 1000))
    poses_per_segment: int = setting(40, "Poses sampled strictly inside each segment, at fractions n/(N+1), "
                                     "n = 1..N (the paper's N).", range=(1, 100_000))


@dataclass
class RenderConfig:
    """How the map renders a synthetic view (at the data's resolution, the first source view's intrinsics)."""

    num_fine: int = setting(0, "Fine samples per ray (network evaluations); 0 = the map's own setting.",
                            range=_COUNT)
    color_samples: int = setting(4, "Run the colour MLP at this many heaviest samples per ray only (faster on "
                                 "opaque scenes); 0 = at every sample with weight.", range=_COUNT)
    min_opacity: float = setting(0.9, "A keypoint's 3D point comes from the map's depth along its ray; rays whose "
                                 "accumulated opacity is below this have no reliable surface and are dropped.",
                                 range=(0.0, 1.0))


@dataclass
class FeatureSettings:
    """The local feature extractor and matcher (a registered pair, see features.py)."""

    extractor: str = setting("sift", "Extractor + matcher pair: sift (OpenCV SIFT, RootSIFT, mutual NN + ratio "
                             "test; weights-free) or superpoint_lightglue (needs kornia and the weights files).",
                             choices=("sift", "superpoint_lightglue"))
    max_keypoints: int = setting(1024, "Keypoint budget per image (strongest responses first).",
                                 range=(1, 100_000))
    ratio_threshold: float = setting(0.85, "Lowe's ratio test of the sift matcher: a mutual nearest neighbour is "
                                     "kept when its distance is at most this fraction of the second nearest's.",
                                     range=(0.01, 1.0))
    sift_contrast_threshold: float = setting(0.01, "OpenCV SIFT's contrast threshold (lower finds more keypoints "
                                             "in weakly textured or blurred renders; OpenCV's default 0.04).",
                                             range=(0.0, 1.0))
    weights_dir: str = setting("", "Folder holding superpoint_v1.pth and superpoint_lightglue.pth for "
                               "superpoint_lightglue; empty = ~/.cache/neural_reloc/weights.")
    lightglue_filter_threshold: float = setting(0.1, "LightGlue's match confidence threshold.", range=(0.0, 1.0))


@dataclass
class FilterConfig:
    """Sec. III-D: keep a rendered view only if it matches its reference views well enough."""

    min_matches: int = setting(30, "Keep a synthetic view when at least this many of its keypoints match a "
                               "keypoint of one of its two reference views (the paper's eta = 500 at 2048 "
                               "SuperPoint keypoints, 640x480; see the module docstring for the scaling).",
                               range=_COUNT)
    max_reprojection_px: float = setting(4.0, "A match counts only when the synthetic keypoint's 3D point (map "
                                         "depth) projects within this many pixels of its reference keypoint "
                                         "(rejects wrong matches and wrong geometry); 0 = no check.",
                                         range=(0.0, 1e6))


@dataclass
class ReliabilityConfig:
    """The per-keypoint reliability target of real views (D2S's): seen again, at the same 3D point."""

    num_neighbors: int = setting(3, "A real view's keypoints are matched with this many nearest real views.",
                                 range=(1, 1000))
    relative_tolerance: float = setting(0.02, "Two matched keypoints agree when their 3D points (map depth) are "
                                        "closer than this fraction of the first one's depth.", range=(0.0, 10.0))


@dataclass
class SynthesisConfig:
    poses: PoseSynthesisConfig = setting(PoseSynthesisConfig(), "Pose synthesis (Sec. III-B).")
    render: RenderConfig = setting(RenderConfig(), "Rendering of the synthetic views and keypoint depth.")
    features: FeatureSettings = setting(FeatureSettings(), "Local features (extractor + matcher).")
    filter: FilterConfig = setting(FilterConfig(), "Filtering of synthetic views by matches (Sec. III-D).")
    reliability: ReliabilityConfig = setting(ReliabilityConfig(), "Reliability target of real keypoints.")
    contact_sheet_views: int = setting(8, "Kept and as many rejected renders on contact_sheet.png (0 = none).",
                                       range=(0, 1000))
    contact_sheet_tile_px: int = setting(160, "Long side of a contact sheet tile in pixels.", range=(16, 4096))


__all__ = ["FeatureSettings", "FilterConfig", "PoseSynthesisConfig", "ReliabilityConfig", "RenderConfig",
           "SynthesisConfig"]
