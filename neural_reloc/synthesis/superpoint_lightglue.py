"""SuperPoint keypoints + LightGlue matching (the paper's extractor and matcher).

SuperPoint is implemented here (Magic Leap's network, ``SuperPointPretrainedNetwork``
weights ``superpoint_v1.pth``); LightGlue is kornia's ``kornia.feature.LightGlue`` with
the ``superpoint_lightglue.pth`` weights of cvg/LightGlue. Nothing is downloaded at run
time: both files must be in ``features.weights_dir`` (default
``~/.cache/neural_reloc/weights``); a missing file or a missing kornia is a
:class:`WeightsMissingError` naming the path to put it at and where to get it.
Keypoints follow :mod:`neural_reloc.synthesis.features`' convention (pixel centres at +0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import FeatureSettings

DEFAULT_WEIGHTS_DIR = Path("~/.cache/neural_reloc/weights")
SUPERPOINT_FILE = "superpoint_v1.pth"
LIGHTGLUE_FILE = "superpoint_lightglue.pth"
SUPERPOINT_URL = "https://github.com/magicleap/SuperPointPretrainedNetwork/raw/master/superpoint_v1.pth"
LIGHTGLUE_URL = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/superpoint_lightglue.pth"
#: SuperPoint's output stride (one 65-way cell per 8x8 pixels) and descriptor size.
CELL = 8
DESCRIPTOR_DIM = 256
#: Detection settings of cvg/LightGlue's SuperPoint (what the LightGlue weights were trained with).
NMS_RADIUS = 4
DETECTION_THRESHOLD = 0.0005
BORDER_PX = 4


class WeightsMissingError(RuntimeError):
    """superpoint_lightglue cannot run here: a package or a weights file is missing."""


def weights_dir(cfg: FeatureSettings) -> Path:
    return Path(cfg.weights_dir).expanduser() if cfg.weights_dir else DEFAULT_WEIGHTS_DIR.expanduser()


def check_requirements(cfg: FeatureSettings, need: tuple[str, ...]) -> dict[str, Path]:
    """Paths of the weights files ``need`` (SUPERPOINT_FILE, LIGHTGLUE_FILE) and kornia
    (for LightGlue); WeightsMissingError listing everything missing and how to fix it."""
    folder = weights_dir(cfg)
    urls = {SUPERPOINT_FILE: SUPERPOINT_URL, LIGHTGLUE_FILE: LIGHTGLUE_URL}
    problems = []
    paths = {name: folder / name for name in need}
    for name, path in paths.items():
        if not path.is_file():
            problems.append(f"weights file {path} is missing: download {urls[name]} and put it there")
    if LIGHTGLUE_FILE in need:
        try:
            import kornia.feature  # noqa: F401
        except ImportError as e:
            problems.append(f"kornia is not importable ({e}): pip install kornia -c constraints.txt")
    if problems:
        raise WeightsMissingError(
            "superpoint_lightglue cannot run (weights are never downloaded at run time; set "
            "features.weights_dir to use another folder): " + "; ".join(problems)
        )
    return paths


def load_weights(path: Path) -> dict:
    """A checkpoint's state dict (tensors only); WeightsMissingError naming the file otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or not a torch file
        raise WeightsMissingError(f"{path}: not a readable weights file ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise WeightsMissingError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


class SuperPointNet(nn.Module):
    """Magic Leap's SuperPoint: a shared VGG-style encoder, a 65-way detector head per 8x8
    cell and a 256-d descriptor head (parameter names of ``superpoint_v1.pth``)."""

    def __init__(self):
        super().__init__()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        conv = lambda i, o, k=3: nn.Conv2d(i, o, k, 1, k // 2)
        self.conv1a, self.conv1b = conv(1, c1), conv(c1, c1)
        self.conv2a, self.conv2b = conv(c1, c2), conv(c2, c2)
        self.conv3a, self.conv3b = conv(c2, c3), conv(c3, c3)
        self.conv4a, self.conv4b = conv(c3, c4), conv(c4, c4)
        self.convPa, self.convPb = conv(c4, c5), conv(c5, CELL * CELL + 1, 1)
        self.convDa, self.convDb = conv(c4, c5), conv(c5, DESCRIPTOR_DIM, 1)

    def forward(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) in [0, 1], H and W multiples of 8 -> heatmap (B, H, W), descriptors (B, 256, H/8, W/8)."""
        x = gray
        for a, b, pool in (("conv1a", "conv1b", True), ("conv2a", "conv2b", True), ("conv3a", "conv3b", True),
                           ("conv4a", "conv4b", False)):
            x = F.relu(getattr(self, b)(F.relu(getattr(self, a)(x))))
            if pool:
                x = F.max_pool2d(x, 2, 2)
        semi = self.convPb(F.relu(self.convPa(x)))
        prob = F.softmax(semi, 1)[:, :-1]
        bsz, _, hc, wc = prob.shape
        heat = prob.reshape(bsz, CELL, CELL, hc, wc).permute(0, 3, 1, 4, 2).reshape(bsz, hc * CELL, wc * CELL)
        desc = F.normalize(self.convDb(F.relu(self.convDa(x))), dim=1)
        return heat, desc


class SuperPointExtractor:
    def __init__(self, cfg: FeatureSettings):
        paths = check_requirements(cfg, (SUPERPOINT_FILE,))
        self.cfg = cfg
        self.net = SuperPointNet().eval()
        state = load_weights(paths[SUPERPOINT_FILE])
        try:
            self.net.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsMissingError(f"{paths[SUPERPOINT_FILE]}: not SuperPoint weights ({e})") from None

    @torch.no_grad()
    def extract(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img = np.asarray(image_rgb, dtype=np.float32) / 255.0
        gray = torch.from_numpy(img @ np.array([0.299, 0.587, 0.114], np.float32))
        h, w = gray.shape
        ph, pw = (-h) % CELL, (-w) % CELL
        heat, desc = self.net(F.pad(gray[None, None], (0, pw, 0, ph)))
        heat = heat[0, :h, :w]
        peak = heat == F.max_pool2d(heat[None, None], 2 * NMS_RADIUS + 1, 1, NMS_RADIUS)[0, 0]
        peak &= heat > DETECTION_THRESHOLD
        peak[:BORDER_PX] = peak[-BORDER_PX:] = False
        peak[:, :BORDER_PX] = peak[:, -BORDER_PX:] = False
        ys, xs = peak.nonzero(as_tuple=True)
        scores = heat[ys, xs]
        order = torch.argsort(scores, descending=True, stable=True)[: int(self.cfg.max_keypoints)]
        xy = torch.stack([xs[order], ys[order]], 1).float() + 0.5  # pixel centres at +0.5
        # Descriptor map cell (i, j) covers pixels [8i, 8i + 8): sample at the pixel position.
        grid = torch.stack([xy[:, 0] / (w + pw), xy[:, 1] / (h + ph)], 1) * 2 - 1
        d = F.grid_sample(desc, grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T
        d = F.normalize(d, dim=1)
        return xy.numpy().astype(np.float32), d.numpy().astype(np.float32), scores[order].numpy().astype(np.float32)


class LightGlueMatcher:
    def __init__(self, cfg: FeatureSettings):
        paths = check_requirements(cfg, (LIGHTGLUE_FILE,))
        from kornia.feature import LightGlue

        # Pruning off, as in the paper (it trades matches for speed).
        self.net = LightGlue(None, input_dim=DESCRIPTOR_DIM, filter_threshold=float(cfg.lightglue_filter_threshold),
                             depth_confidence=-1, width_confidence=-1).eval()
        state = load_weights(paths[LIGHTGLUE_FILE])
        for i in range(self.net.conf.n_layers):  # cvg's file names the attention layers the old way
            state = {k.replace(f"self_attn.{i}", f"transformers.{i}.self_attn")
                      .replace(f"cross_attn.{i}", f"transformers.{i}.cross_attn"): v for k, v in state.items()}
        missing = [k for k in self.net.load_state_dict(state, strict=False).missing_keys
                   if k in dict(self.net.named_parameters())]
        if missing:
            raise WeightsMissingError(f"{paths[LIGHTGLUE_FILE]}: not SuperPoint LightGlue weights (missing {missing[:3]})")

    @torch.no_grad()
    def match(self, a, b) -> np.ndarray:
        if len(a) == 0 or len(b) == 0:
            return np.zeros((0, 2), dtype=np.int64)

        def side(f):
            return {"keypoints": torch.from_numpy(f.keypoints_px)[None],
                    "descriptors": torch.from_numpy(f.descriptors)[None],
                    "image_size": torch.tensor([[f.width, f.height]], dtype=torch.float32)}

        out = self.net({"image0": side(a), "image1": side(b)})
        return out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)


__all__ = ["LightGlueMatcher", "SuperPointExtractor", "SuperPointNet", "WeightsMissingError", "check_requirements"]
