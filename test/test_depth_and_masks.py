"""Depth supervision of the neural map and nerfstudio masks (``mask_path``).

Masks: the loader reads them (all frames or none), PosedImages carries them through
subset() and fingerprint(), training never samples a masked pixel and evaluation
scores valid pixels only. Depth: the per-pixel ray distances the loss needs, the loss
terms on hand-made rays, and a short training whose held-out depth error must drop
with depth supervision.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from neural_reloc.data import DatasetError, load_transforms_json
from neural_reloc.data.posed_images import PosedImages
from neural_reloc.nerf.train import TrainingImages, evaluate_views, expected_depth_loss, free_space_loss

W, H = 16, 12
#: Colour of every masked pixel in the hand-made data: a sampled ray of this colour
#: would be a masked pixel.
MASKED_RGB = (255, 0, 255)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the trainings below are tiny, and on a shared 2-core machine
    two threads wait on each other whenever another process is busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ hand-made data
def _c2w(x: float) -> list[list[float]]:
    T = np.eye(4)
    T[0, 3] = x
    return T.tolist()


def _mask_of(i: int) -> np.ndarray:
    """Frame i's mask: a different valid rectangle per frame (0 = ignore)."""
    m = np.zeros((H, W), np.uint8)
    m[1 + i : 8 + i, 2 + i : 12] = 255
    return m


def _write_frames(root: Path, n: int = 3, masks: bool | list[int] = True, depth: bool = False) -> Path:
    """A transforms.json dataset of ``n`` frames whose masked pixels are MASKED_RGB.

    ``masks``: True (every frame has a mask_path), False (none) or the frames that have one.
    """
    with_mask = list(range(n)) if masks is True else ([] if masks is False else list(masks))
    meta = {"fl_x": 20.0, "fl_y": 20.0, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "frames": []}
    rng = np.random.default_rng(0)
    for i in range(n):
        rgb = rng.integers(0, 200, size=(H, W, 3), dtype=np.uint8)
        rgb[_mask_of(i) == 0] = MASKED_RGB
        (root / "images").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / f"images/{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        fr = {"file_path": f"images/{i}.png", "transform_matrix": _c2w(0.1 * i)}
        if i in with_mask:
            (root / "masks").mkdir(exist_ok=True)
            assert cv2.imwrite(str(root / f"masks/{i}.png"), _mask_of(i))
            fr["mask_path"] = f"masks/{i}.png"
        if depth:
            (root / "depth").mkdir(exist_ok=True)
            d = np.full((H, W), 2000, np.uint16)
            d[0, :] = 0  # no measurement
            assert cv2.imwrite(str(root / f"depth/{i}.png"), d)
            fr["depth_file_path"] = f"depth/{i}.png"
        meta["frames"].append(fr)
    path = root / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


# ------------------------------------------------------------------ loading masks
def test_loader_reads_masks_and_rejects_partial_masks(tmp_path):
    ds = load_transforms_json(_write_frames(tmp_path / "ok"))
    assert ds.mask_paths is not None and len(ds.mask_paths) == 3
    for i in range(3):
        m = ds.mask(i)
        assert m.dtype == bool and m.shape == (H, W)
        np.testing.assert_array_equal(m, _mask_of(i) > 0)
    # Downscaled: nearest resize to the loaded size.
    half = ds.with_downscale(2).mask(1)
    assert half.shape == (H // 2, W // 2) and half.dtype == bool
    assert half.any() and not half.all()
    # No masks at all: None.
    plain = load_transforms_json(_write_frames(tmp_path / "none", masks=False))
    assert plain.mask_paths is None and plain.mask(0) is None
    # Some frames only: an error naming the frames without.
    with pytest.raises(DatasetError, match=r"1 frame\(s\) have no mask_path while others do: images/1.png"):
        load_transforms_json(_write_frames(tmp_path / "partial", masks=[0, 2]))
    # A listed mask file that does not exist.
    path = _write_frames(tmp_path / "missing")
    (tmp_path / "missing/masks/2.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 masks missing: .*masks/2.png"):
        load_transforms_json(path)


def test_mask_errors_name_the_frame(tmp_path):
    ds = load_transforms_json(_write_frames(tmp_path))
    assert cv2.imwrite(str(ds.mask_paths[0]), np.ones((H + 1, W), np.uint8))
    with pytest.raises(DatasetError, match=rf"mask of frame 'images/0.png'.* is {W}x{H + 1} but the image is {W}x{H}"):
        ds.mask(0)
    assert cv2.imwrite(str(ds.mask_paths[1]), np.ones((H, W, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"mask of frame 'images/1.png'.*3 channels.*single-channel"):
        ds.mask(1)
    Path(ds.mask_paths[2]).write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"mask of frame 'images/2.png'.*cannot decode"):
        ds.mask(2)
    Path(ds.mask_paths[2]).unlink()
    with pytest.raises(DatasetError, match=r"mask of frame 'images/2.png' is missing"):
        ds.mask(2)


def test_subset_and_fingerprint_carry_masks(tmp_path):
    ds = load_transforms_json(_write_frames(tmp_path))
    sub = ds.subset([2, 0])
    assert sub.mask_paths == [ds.mask_paths[2], ds.mask_paths[0]]
    np.testing.assert_array_equal(sub.mask(0), ds.mask(2))
    # The masks are part of the identity of the data; data without keeps its own.
    from dataclasses import replace

    fp = ds.fingerprint()
    without = replace(ds, mask_paths=None)
    assert without.fingerprint() != fp
    assert cv2.imwrite(str(ds.mask_paths[1]), np.full((H, W), 255, np.uint8))  # another mask file
    assert ds.fingerprint() != fp
    # Counted in the consistency check.
    with pytest.raises(DatasetError, match="count mismatch.*mask_paths"):
        replace(ds, mask_paths=ds.mask_paths[:2])


# ------------------------------------------------------------------ training / evaluation
def test_masked_pixels_are_never_sampled(tmp_path):
    ds = load_transforms_json(_write_frames(tmp_path))
    imgs = TrainingImages(ds, torch.device("cpu"))
    assert imgs.num_pixels == sum(int(_mask_of(i).astype(bool).sum()) for i in range(3))
    g = torch.Generator().manual_seed(0)
    rays, rgb, dist = imgs.random_rays(4000, g)
    assert dist is None  # no depth in this data
    masked = torch.tensor(MASKED_RGB, dtype=torch.float32) / 255.0
    assert not (rgb == masked).all(-1).any(), "a masked pixel was sampled"
    # Every image is still sampled, and the pixels drawn are the valid ones.
    sel = torch.randint(0, imgs.num_pixels, (4000,), generator=g)
    img, uv = imgs.image_index[sel].long(), imgs.pixel[sel].long()
    assert set(img.tolist()) == {0, 1, 2}
    valid = torch.from_numpy(np.stack([_mask_of(i) > 0 for i in range(3)]))
    assert valid[img, uv[:, 1], uv[:, 0]].all()


class _FakeMap:
    """Renders the ground truth inside the masks and garbage outside (render_view API)."""

    def __init__(self, data: PosedImages, depth_m: float):
        self.data, self.depth_m = data, depth_m

    def eval(self):
        return self

    def render_view(self, camera, c2w_opengl, outputs):
        i = next(k for k in range(len(self.data)) if np.array_equal(self.data.c2w_opengl[k], c2w_opengl))
        rgb = self.data.image(i).astype(np.float32) / 255.0
        depth = np.full((camera.height, camera.width), self.depth_m, np.float32)
        bad = ~self.data.mask(i)
        rgb[bad] = 1.0 - rgb[bad]
        depth[bad] = 100.0
        return {"rgb": rgb, "depth": depth}


def test_eval_psnr_and_depth_error_ignore_masked_pixels(tmp_path):
    from dataclasses import replace

    ds = load_transforms_json(_write_frames(tmp_path, depth=True))
    fake = _FakeMap(ds, depth_m=2.1)
    res = evaluate_views(fake, ds, [0, 1, 2])
    assert res["psnr_mean"] > 100  # exact inside the masks
    assert res["depth_median_abs_err_m"] == pytest.approx(0.1, abs=1e-4)
    # The same renders scored on every pixel: the garbage counts.
    unmasked = evaluate_views(fake, replace(ds, mask_paths=None), [0, 1, 2])
    assert unmasked["psnr_mean"] < 20
    assert unmasked["depth_median_abs_err_m"] > 1.0


# ------------------------------------------------------------------ depth terms
def test_training_rays_carry_the_measured_ray_distance(tmp_path):
    ds = load_transforms_json(_write_frames(tmp_path, masks=False, depth=True))
    imgs = TrainingImages(ds, torch.device("cpu"))
    rays, _, dist = imgs.rays(torch.arange(imgs.num_pixels))
    uv = imgs.pixel.long()
    measured = uv[:, 1] != 0  # row 0 has no depth
    assert (dist[~measured] == 0).all()
    # distance * (z of the unit direction in the camera) = the 2 m z-depth
    z = dist[measured] * rays.dirs_cam_z[measured]
    torch.testing.assert_close(z, torch.full_like(z, 2.0))
    assert (dist[measured] > 2.0).any()  # off-axis rays are longer than the z-depth
    # use_depth off: no distances at all.
    assert TrainingImages(ds, torch.device("cpu"), load_depth=False).distance is None


def test_depth_loss_terms_on_hand_made_rays():
    # Two rays, four unit intervals [1, 2), [2, 3), [3, 4), [4, 5); the surface at 3.5.
    t0 = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).repeat(2, 1)
    t1 = t0 + 1.0
    target = torch.tensor([3.5, 0.0])  # the second ray has no measurement
    at_surface = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    in_front = torch.tensor([[0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert float(free_space_loss(at_surface, t1, target, margin=0.05)) == 0.0
    # [1, 2) ends in front of 3.5 * 0.95; [2, 3) ends at 3 < 3.325 but weighs 0 here.
    assert float(free_space_loss(in_front, t1, target, margin=0.05)) == pytest.approx(0.5)
    # A margin wider than the gap exempts the interval ending at 3 (not the one at 2).
    w = torch.tensor([[0.0, 0.4, 0.6, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert float(free_space_loss(w, t1, target, margin=0.2)) == 0.0
    assert float(free_space_loss(w, t1, target, margin=0.1)) == pytest.approx(0.4)
    far = torch.full((2,), 5.0)
    extent = 10.0
    assert float(expected_depth_loss(torch.tensor([3.5, 9.0]), target, far, extent, 0.01)) == 0.0
    # Linear beyond the Huber delta: |0.5 m| / 10 m - 0.01 / 2.
    assert float(expected_depth_loss(torch.tensor([4.0, 9.0]), target, far, extent, 0.01)) == pytest.approx(0.045)
    # A measured surface beyond the sampled range is not a target.
    assert float(expected_depth_loss(torch.tensor([4.0, 9.0]), target, far * 0.5, extent, 0.01)) == 0.0


# ------------------------------------------------------------------ depth helps
#: A small, quick neural map (seconds per hundred steps on 2 CPU cores).
QUICK_MAP = [
    "train.steps=100", "train.rays_per_batch=1024", "train.checkpoint_every=0",
    "field.encoding.dense_resolutions=[16,32,64]", "sampler.grid_resolution=64",
    "sampler.num_coarse=64", "sampler.num_fine=24", "sampler.grid_warmup_steps=50",
    "sampler.grid_update_every=8",
]  # fmt: skip


def test_depth_supervision_lowers_the_held_out_depth_error(tmp_path):
    """Depth images, and without them triangulated keypoints (DS-NeRF), fix the
    geometry that photometric training alone leaves free."""
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene
    from neural_reloc.nerf.config import NeuralMapConfig
    from neural_reloc.nerf.train import NeuralMapTrainer

    # Keypoints are found in the native 160x120 images; the map trains at 80x60.
    generate_procedural_scene(tmp_path / "scene", ProceduralSceneConfig(width=160, height=120, num_frames=30))
    data = load_dataset(tmp_path / "scene")
    test = data.subset("test").with_max_size(80)
    modes = {  # name: (use_depth, keypoint_depth)
        "photometric": (False, False),
        "keypoints": (False, True),
        "depth images": (True, True),
    }
    res = {}
    for name, (use_depth, keypoints) in modes.items():
        cfg = merge(NeuralMapConfig(), parse_dotted([
            *QUICK_MAP, "train.max_image_size=80", f"train.use_depth={str(use_depth).lower()}",
            f"train.keypoint_depth={str(keypoints).lower()}",
        ]))
        logs: list[str] = []
        work = tmp_path / f"work_{name}"
        tr = NeuralMapTrainer(data.subset("train"), cfg, torch.device("cpu"), work, log=logs.append)
        assert tr.images.has_depth == use_depth  # keypoints are triangulated when the field trains
        tr.fit()
        assert tr.images.has_depth == (use_depth or keypoints)
        assert (tr.images.depth_pixels is not None) == (keypoints and not use_depth)
        assert any("triangulated keypoints" in m for m in logs) == (keypoints and not use_depth), logs
        assert ("depth" in tr.state.history[-1]) == use_depth
        assert ("keypoint_depth" in tr.state.history[-1]) == (keypoints and not use_depth)
        res[name] = evaluate_views(tr.model, test, list(range(len(test))))
    err = {k: v["depth_median_rel_err"] for k, v in res.items()}
    assert err["depth images"] < 0.7 * err["photometric"], err
    assert err["keypoints"] < 0.7 * err["photometric"], err
    # Not at the cost of appearance.
    for name in ("keypoints", "depth images"):
        assert res[name]["psnr_mean"] > res["photometric"]["psnr_mean"] - 1.0, res
