"""PoseMap (issue 16): NeRF-P's PoseMap, APR-Net, the losses, add-method posemap with and
without unlabeled images, and the relocalizer. Tiny scenes and few steps: seconds each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_MAP = [
    "train.steps=40", "train.rays_per_batch=512", "train.checkpoint_every=0", "train.max_image_size=64",
    "sampler.grid_resolution=16", "sampler.num_coarse=16", "sampler.num_fine=8", "sampler.grid_warmup_steps=2",
    "sampler.grid_update_every=2", "field.encoding.dense_resolutions=[8,16]", "train.virtual_patches=2",
]
TINY_POSEMAP = [
    "posemap.dim=8", "posemap.head_hidden=16", "posemap.grid_long_side=8", "posemap.decoder_pool=[2,2]",
    "posemap.decoder_hidden=[32]", "posemap.render_samples=8", "posemap.steps=30", "posemap.batch=4",
    "apr.image_long_side=32", "apr.channels=[8,8,16]", "apr.head_hidden=32", "apr.feature_dim=8",
    "train.steps=150", "train.batch=4", "train.rvs_per_view=1", "train.validation_per_view=1",
    "train.render_samples=8", "train.lr=3e-3", "align.steps=4", "align.rounds=2", "align.batch=2",
    "align.lr=1e-3",
]
#: The add-method round trip trains with L_pose only (the overfit test covers the other losses).
POSE_ONLY = ["train.image_weight=0", "train.rvs_weight=0", "train.posemap_weight=0"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and on shared cores two OpenMP threads wait on
    each other (NOTES.md, "Measuring on these machines")."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(dataset dir, a --method nerf map of it) built in seconds."""
    from neural_reloc.config_io import merge, parse_dotted
    from neural_reloc.data import load_dataset
    from neural_reloc.data.procedural import ProceduralSceneConfig, generate_procedural_scene
    from neural_reloc.mapping import build_map
    from neural_reloc.nerf.config import NeuralMapConfig

    root = tmp_path_factory.mktemp("posemap")
    generate_procedural_scene(root / "scene", ProceduralSceneConfig(width=64, height=48, num_frames=10))
    data = load_dataset(root / "scene")
    m = build_map(data, root / "map", method="nerf", config=merge(NeuralMapConfig(), parse_dotted(TINY_MAP)),
                  log=lambda s: None, evaluate=False)
    return root / "scene", m


def _cfg(extra=()):
    from neural_reloc.config_io import load_method_config

    return load_method_config("posemap", None, TINY_POSEMAP + list(extra))


def _model_and_data(tiny):
    from neural_reloc.data import load_dataset
    from neural_reloc.map_loading import load_neural_map
    from neural_reloc.methods.posemap.pose_branch import attach_pose_head

    scene, m = tiny
    model = load_neural_map(m)
    for p in model.parameters():
        p.requires_grad_(False)
    head = attach_pose_head(model, _cfg().posemap)
    return model, head, load_dataset(scene).subset("train")


def test_shapes_and_6d_rotation():
    from neural_reloc.methods.posemap.apr_net import AprNet
    from neural_reloc.methods.posemap.pose_repr import rotation_from_6d

    cfg = _cfg()
    net = AprNet(cfg.apr).eval()
    pose, feats = net(torch.rand(2, 3, 24, 32), features=True)
    assert pose.shape == (2, 4, 4) and feats.shape == (2, cfg.apr.feature_dim, 6, 8)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(2, 6, 8))
    R = rotation_from_6d(torch.randn(5, 6))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5, rtol=0)
    assert torch.allclose(torch.det(R), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 3, 20, 32))


def test_apr_input_of_a_large_image_is_its_area_average():
    import cv2

    from neural_reloc.geometry.camera import Camera
    from neural_reloc.methods.posemap.apr_net import apr_input

    rng = np.random.default_rng(0)
    # smooth content with some texture, 1080x1920 portrait like a phone photo
    yy, xx = np.mgrid[0:1920, 0:1080]
    base = (127 + 100 * np.sin(xx / 37.0) * np.cos(yy / 53.0))[..., None] + rng.normal(0, 20, (1920, 1080, 3))
    image = np.clip(base, 0, 255).astype(np.uint8)
    for w in (64, 72):  # factors 16.9 / 15 (blocks of 6) and 15 / 15 (blocks of 6: 7 divides neither side)
        cam = Camera(width=w, height=128, fx=60.0, fy=60.0, cx=w / 2, cy=64.0)
        direct = cv2.resize(image, (w, 128), interpolation=cv2.INTER_AREA).astype(float)
        out = apr_input(image, cam)
        assert out.shape == (128, w, 3) and out.dtype == np.uint8
        assert np.abs(out - direct).mean() < 1.0 and np.abs(out - direct).max() <= 16
    small = image[:96, :128]  # a factor below the two-step threshold: one area resize, as before
    cam_small = Camera(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    assert np.array_equal(apr_input(small, cam_small), cv2.resize(small, (64, 48), interpolation=cv2.INTER_AREA))


def test_posemap_render_is_the_weighted_sum_and_differentiable_in_the_pose(tiny):
    """Eq. 3-4: the PoseMap of a ray equals sum_i w_i f_i over its samples (checked by
    rendering the head per ray through the map's own renderer), batched renders equal
    one-at-a-time renders, and the gradient reaches the pose."""
    from neural_reloc.geometry.frames import opencv_c2w_from_opengl_c2w
    from neural_reloc.methods.posemap.pose_branch import HEAD_NAME, grid_size, render_posemap

    model, _, data = _model_and_data(tiny)
    cams = [data.camera(i) for i in range(2)]
    c2w = torch.tensor(np.stack([opencv_c2w_from_opengl_c2w(data.c2w_opengl[i]) for i in range(2)]),
                       dtype=torch.float32, requires_grad=True)
    size = grid_size(cams[0], 8)
    pm = render_posemap(model, cams, c2w, size, 8)
    assert pm.shape == (2, 8, size[1], size[0])
    one = render_posemap(model, cams[1:], c2w[1:], size, 8)
    torch.testing.assert_close(pm[1:], one, atol=1e-5, rtol=1e-4)
    ref = model.render_view(cams[0].resized(*size), data.c2w_opengl[0], (HEAD_NAME,), num_fine=8)[HEAD_NAME]
    torch.testing.assert_close(pm[0].permute(1, 2, 0), torch.as_tensor(ref), atol=1e-4, rtol=1e-3)
    pm.square().sum().backward()
    assert c2w.grad is not None and torch.isfinite(c2w.grad).all() and c2w.grad[:, :3, 3].abs().sum() > 0


def test_losses_decrease_on_a_tiny_overfit(tiny):
    from neural_reloc.methods.posemap.apr_net import AprNet
    from neural_reloc.methods.posemap.pose_branch import PoseMapDecoder
    from neural_reloc.methods.posemap.training import render_views, train_apr, train_pose_branch

    model, head, data = _model_and_data(tiny)
    cfg = _cfg()
    for p in head.parameters():
        p.requires_grad_(True)
    nerf_p = train_pose_branch(model, head, PoseMapDecoder(cfg.posemap), data, cfg, "cpu")
    for p in head.parameters():
        p.requires_grad_(False)
    assert nerf_p["history"][-1]["loss"] < nerf_p["history"][0]["loss"]
    cache = render_views(model, data, cfg)
    assert cache.real.shape == cache.render.shape and cache.rvs.shape[0] == len(data)
    # re-validation after the alignment renders the same validation poses and nothing else
    val = render_views(model, data, cfg, validation_only=True)
    assert torch.equal(val.val, cache.val) and torch.equal(val.val_c2w_opencv, cache.val_c2w_opencv)
    assert val.real.shape[0] == val.render.shape[0] == val.rvs.shape[0] == 0
    cams = [data.camera(i).resized(cache.real.shape[2], cache.real.shape[1]) for i in range(len(data))]
    s = train_apr(AprNet(cfg.apr), model, cache, cams, cfg, "cpu", log=lambda m: None)
    first, last = s["history"][0], s["history"][-1]
    for term in ("pose", "rvs", "posemap", "loss"):
        assert last[term] < first[term], (term, first, last)


def _localize_error(reloc, data, i):
    from neural_reloc.geometry.frames import opencv_c2w_from_opencv_w2c
    from neural_reloc.geometry.se3 import pose_error

    res = reloc.localize(data.image(i), data.camera(i), None)
    return res, pose_error(opencv_c2w_from_opencv_w2c(res.w2c_opencv), opencv_c2w_from_opencv_w2c(data.w2c_opencv(i)))


def test_add_method_round_trip_and_unlabeled_refinement(tiny, tmp_path):
    from neural_reloc.data import load_dataset
    from neural_reloc.data.posed_images import DatasetError
    from neural_reloc.geometry.frames import opencv_c2w_from_opencv_w2c
    from neural_reloc.map_bundle import FIELD_FILE, read_map, sha256_file
    from neural_reloc.map_loading import describe_map, load_neural_map, load_relocalizer
    from neural_reloc.mapping import add_method
    from neural_reloc.methods.posemap.pose_branch import HEAD_NAME

    scene, m = tiny
    data = load_dataset(scene)
    cfg = _cfg(POSE_ONLY)
    out = add_method(m, "posemap", data, cfg, out_dir=tmp_path / "pm", log=lambda s: None)
    assert sha256_file(out / FIELD_FILE) == sha256_file(m / FIELD_FILE)
    info = describe_map(out)
    assert "posemap" in info["components"]
    assert HEAD_NAME in load_neural_map(out).field.heads  # the head is stored with the component, attached on load
    reloc = load_relocalizer(out, "cpu", method="posemap")
    train = data.indices("train")
    errs = [_localize_error(reloc, data, i)[1][0] for i in train]
    # a random pose: another training view's (the typical distance between views)
    rng = np.random.default_rng(0)
    centers = np.stack([opencv_c2w_from_opencv_w2c(data.w2c_opencv(i))[:3, 3] for i in train])
    random_err = [np.linalg.norm(centers[i] - centers[j]) for i, j in zip(range(len(train)), rng.permutation(len(train)))]
    assert np.median(errs) < 0.5 * np.median(random_err), (errs, random_err)
    res, _ = _localize_error(reloc, data, train[0])
    assert res.success and res.method == "posemap" and res.covariance.shape == (6, 6)
    assert np.all(np.diag(res.covariance) > 0) and np.count_nonzero(res.covariance - np.diag(np.diag(res.covariance))) == 0
    w2c, cov, ms = reloc.predict_w2c_opencv(data.image(train[0]), data.camera(train[0]))
    np.testing.assert_allclose(w2c, res.w2c_opencv)
    assert ms > 0 and np.array_equal(cov, res.covariance)
    # a pose outside the map is not a success
    reloc.bounds_max = reloc.bounds_min - 1.0
    bad = reloc.localize(data.image(train[0]), data.camera(train[0]), None)
    assert not bad.success and "outside the map" in bad.reason

    # unlabeled refinement: the test split without its poses changes APR-Net's weights only
    before = read_map(out).module_state("posemap_apr")
    logs: list[str] = []
    add_method(out, "posemap", data, cfg, unlabeled=scene, log=logs.append)
    assert any("refining the map's PoseMap component" in s for s in logs), logs
    after = read_map(out)
    comp = after.manifest["components"]["posemap"]
    assert comp["training"]["alignment"]["images"] == len(data.indices("test"))
    validation = comp["training"]["alignment"]["validation"]  # re-validated on the validation renders alone
    assert validation["validation_views"] == len(train) * cfg.train.validation_per_view
    changed = [k for k in before if not torch.equal(before[k], after.module_state("posemap_apr")[k])]
    assert any(k.endswith("weight") for k in changed)
    assert sha256_file(out / FIELD_FILE) == sha256_file(m / FIELD_FILE)
    load_relocalizer(out, "cpu", method="posemap")
    with pytest.raises(DatasetError, match="--unlabeled .*nowhere.*does not exist"):
        add_method(out, "posemap", data, cfg, unlabeled=tmp_path / "nowhere", log=lambda s: None)
    with pytest.raises(ValueError, match="does not take unlabeled images"):
        add_method(out, "nerfmatch", data, None, unlabeled=scene, log=lambda s: None)


def test_add_method_with_a_teacher(tiny, tmp_path, monkeypatch):
    """add-method posemap --unlabeled with align.teacher: the teacher's poses (a stand-in
    that knows the test images' true poses and refuses one) drive the alignment, the
    held-out images are validated against them, a run killed while the teacher localizes
    resumes with the fixes it had, and PoseMap cannot teach itself."""
    from neural_reloc.data import load_dataset
    from neural_reloc.geometry.frames import opencv_c2w_from_opencv_w2c
    from neural_reloc.map_bundle import MapError, read_map
    from neural_reloc.map_loading import component_entry
    from neural_reloc.mapping import add_method
    from neural_reloc.methods.posemap import trainer
    from neural_reloc.methods.posemap.trainer import teacher_from_bundle

    scene, m = tiny
    data = load_dataset(scene)
    out = add_method(m, "posemap", data, _cfg(POSE_ONLY), out_dir=tmp_path / "pm", log=lambda s: None)
    with pytest.raises(MapError, match="align.teacher='posemap' cannot teach PoseMap"):
        teacher_from_bundle(read_map(out), "posemap", "cpu")
    # a teacher's cached fixes are tied to its weights' checksums and its settings (any component's)
    bundle = read_map(out)
    ident = trainer.teacher_identity(bundle, "posemap", component_entry(bundle.manifest, "posemap"))
    files = bundle.manifest["files"]
    assert ident["field"] == files["field.safetensors"]["sha256"] and ident["component"] == files["posemap.safetensors"][
        "sha256"] and ident["config"] == bundle.manifest["components"]["posemap"]["config"]
    test = data.indices("test")
    poses = {data.image(i).tobytes(): opencv_c2w_from_opencv_w2c(data.w2c_opencv(i)) for i in test[1:]}
    calls = []

    assert len(test) >= 2
    killed_after = [len(test) - 1]  # the run is killed before the last image's fix

    def stand_in(bundle, method, device):
        assert method == "crossfire"

        def localize(image, camera):
            if len(calls) == killed_after[0]:
                raise KeyboardInterrupt  # the run is killed while the teacher localizes
            calls.append(method)
            return poses.get(image.tobytes())

        localize.identity = {"teacher": method, "weights": "stand-in"}
        return localize

    monkeypatch.setattr(trainer, "teacher_from_bundle", stand_in)
    cfg = _cfg(POSE_ONLY + ["align.teacher=crossfire", "align.teacher_steps=3", "align.teacher_holdout_every=2"])
    with pytest.raises(KeyboardInterrupt):
        add_method(out, "posemap", data, cfg, unlabeled=scene, log=lambda s: None)
    assert len(calls) == len(test) - 1
    killed_after[0] = -1
    logs: list[str] = []
    add_method(out, "posemap", data, cfg, unlabeled=scene, log=logs.append)
    assert len(calls) == len(test)  # the rerun asked only for the image the killed run had not localized
    assert any(f"{len(test) - 1} teacher fixes from a previous run" in s for s in logs), logs
    a = read_map(out).manifest["components"]["posemap"]["training"]["alignment"]
    localized = len(test) - 1
    assert a["teacher"]["localized"] == localized and a["teacher"]["of"] == len(test)
    assert len(a["teacher"]["held_out"]) == localized // 2 and a["images"] == localized - localized // 2
    assert a["validation_real"]["validation_views"] == localized // 2
    assert any("held-out images against the teacher's poses" in s for s in logs), logs


def test_unlabeled_image_folder_and_cli_error(tiny, tmp_path):
    import cv2

    from neural_reloc.data import load_dataset
    from neural_reloc.data.posed_images import DatasetError
    from neural_reloc.methods.posemap.unlabeled import load_unlabeled

    scene, m = tiny
    data = load_dataset(scene)
    folder = tmp_path / "imgs"
    folder.mkdir()
    test = data.indices("test")
    for i in test:
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(data.image(i), cv2.COLOR_RGB2BGR))
    images, cams, taught = load_unlabeled(folder, _cfg(), data.camera(0))
    assert taught is None  # no teacher
    assert images.shape == (len(test), cams[0].height, cams[0].width, 3) and max(cams[0].width, cams[0].height) == 32
    cv2.imwrite(str(folder / "wide.png"), np.zeros((10, 40, 3), np.uint8))
    with pytest.raises(DatasetError, match="wide.png.*aspect ratio"):
        load_unlabeled(folder, _cfg(), data.camera(0))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="--unlabeled"):
        load_unlabeled(empty, _cfg(), data.camera(0))
    # a rosbag2 bag's camera stream (its CameraInfo gives the camera)
    bag = subprocess.run([sys.executable, "-m", "neural_reloc.cli", "bag-from-dataset", "--data", str(scene), "--split",
                          "test", "--out", str(tmp_path / "bag")], check=False, capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert bag.returncode == 0, bag.stderr[-2000:]
    images, cams, _ = load_unlabeled(tmp_path / "bag", _cfg(), data.camera(0))
    assert images.shape[0] == len(test) and cams[0].fx == pytest.approx(data.camera(0).fx * cams[0].width / 64)
    run = subprocess.run([sys.executable, "-m", "neural_reloc.cli", "add-method", "posemap", "--map", str(m), "--data",
                          str(scene), "--out", str(tmp_path / "o"), "--unlabeled", str(tmp_path / "missing")],
                         check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "missing" in run.stderr and "does not exist" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.safetensors"))


def test_teacher_split_holds_out_every_kth_localized_image():
    from neural_reloc.methods.posemap.alignment import teacher_split

    c2w = np.tile(np.eye(4), (9, 1, 1))
    c2w[[1, 5]] = np.nan  # the teacher gave no pose for these
    use, held = teacher_split(c2w, 3)
    assert held.tolist() == [3, 7] and use.tolist() == [0, 2, 4, 6, 8]  # localized: 0 2 3 4 6 7 8
    use, held = teacher_split(c2w, 0)
    assert held.size == 0 and use.tolist() == [0, 2, 3, 4, 6, 7, 8]
    use, held = teacher_split(np.full((3, 4, 4), np.nan), 2)
    assert use.size == 0 and held.size == 0


def test_alignment_with_a_teacher_learns_its_poses_and_leaves_out_the_rest(tiny):
    """The teacher's poses are targets: APR-Net's error on the images aligned on falls; an
    image without a teacher pose and every 4th localized one (held out) are left out of
    the alignment, and the held-out ones' error joins the validation error per axis, the
    larger of the two."""
    from neural_reloc.data import load_dataset
    from neural_reloc.geometry.frames import opencv_c2w_from_opencv_w2c
    from neural_reloc.methods.posemap.alignment import align
    from neural_reloc.methods.posemap.apr_net import AprNet, apr_input
    from neural_reloc.methods.posemap.training import predict, validate_on_real, validation_error

    model, _, _ = _model_and_data(tiny)
    data = load_dataset(tiny[0])
    cfg = _cfg(["align.teacher=test", "align.teacher_steps=300", "align.teacher_lr=3e-3", "align.teacher_holdout_every=4",
                "align.teacher_labelled_batch=0", "align.image_weight=0", "align.posemap_weight=0"])
    apr = AprNet(cfg.apr)
    idx = data.indices(None)
    gt = np.stack([opencv_c2w_from_opencv_w2c(data.w2c_opencv(i)) for i in idx])
    apr.pose.set_normalization(gt[:, :3, 3])
    cams = [data.camera(i).resized(32, 24) for i in idx]
    images = np.stack([apr_input(data.image(i), c) for i, c in zip(idx, cams)])
    teacher_c2w_opencv = gt.copy()
    teacher_c2w_opencv[0] = np.nan
    before = predict(apr, torch.as_tensor(images), "cpu")
    s = align(apr, model, images, cams, cfg, "cpu", log=lambda m: None, teacher_c2w_opencv=teacher_c2w_opencv)
    t = s["teacher"]
    assert (t["localized"], t["of"]) == (len(idx) - 1, len(idx))
    assert t["held_out"] == [4, 8] and t["aligned_on"] == s["images"] == len(idx) - 3
    assert any("pose" in h for h in s["history"])
    after = predict(apr, torch.as_tensor(images), "cpu")
    aligned = [i for i in range(1, len(idx)) if i not in t["held_out"]]

    def err(p):
        return np.median(np.linalg.norm(p[aligned, :3, 3] - gt[aligned, :3, 3], axis=1))

    assert err(after) < 0.7 * err(before), (err(before), err(after))
    # mapping images with their poses join each step's L_pose (teacher_labelled_batch)
    mixed = _cfg(["align.teacher=test", "align.teacher_steps=2", "align.teacher_labelled_batch=2"])
    s2 = align(AprNet(cfg.apr), model, images, cams, mixed, "cpu", log=lambda m: None,
               teacher_c2w_opencv=teacher_c2w_opencv, labelled=(images[:3], gt[:3]))
    assert s2["steps"] == 2 and all("pose" in h for h in s2["history"])
    # the held-out images' error joins the validation variance: NaN (no renders) -> theirs; larger renders' stays
    held = t["held_out"]
    own, _ = validation_error(predict(apr, torch.as_tensor(images[held]), "cpu"), gt[held])
    apr.validation_var.fill_(float("nan"))
    real = validate_on_real(apr, images[held], gt[held], "cpu")
    assert real["validation_views"] == 2
    np.testing.assert_allclose(apr.validation_var.numpy(), own, rtol=1e-5)
    apr.validation_var.fill_(0.0)  # smaller than theirs: theirs
    validate_on_real(apr, images[held], gt[held], "cpu")
    np.testing.assert_allclose(apr.validation_var.numpy(), own, rtol=1e-5)
    larger = torch.as_tensor(own * 10 + 1.0, dtype=torch.float32)
    apr.validation_var.copy_(larger)  # larger than theirs: kept
    validate_on_real(apr, images[held], gt[held], "cpu")
    assert torch.equal(apr.validation_var, larger)


def test_teacher_must_be_a_matching_method_of_the_map(tiny):
    from neural_reloc.map_bundle import MapError, read_map
    from neural_reloc.methods.posemap.trainer import teacher_from_bundle

    _, m = tiny
    with pytest.raises(MapError, match="align.teacher='crossfire' is not a method of this map"):
        teacher_from_bundle(read_map(m), "crossfire", "cpu")


def test_cached_teacher_keeps_fixes_per_image_and_camera_for_the_same_teacher_only(tmp_path):
    from neural_reloc.geometry.camera import Camera
    from neural_reloc.methods.posemap.trainer import CachedTeacher

    asked = []

    def teacher(image, camera):
        asked.append(int(image[0, 0, 0]))
        return None if image[0, 0, 0] == 2 else np.eye(4) * (1 + image[0, 0, 0])

    teacher.identity = {"teacher": "crossfire", "component": "a"}
    cam = Camera(8, 6, 5.0, 5.0, 4.0, 3.0)
    images = [np.full((6, 8, 3), v, np.uint8) for v in (0, 1, 2)]
    path = tmp_path / "teacher.pt"
    first = CachedTeacher(teacher, path, log=lambda s: None)
    out = [first(im, cam) for im in images]
    assert asked == [0, 1, 2] and out[2] is None and np.allclose(out[1], np.eye(4) * 2)
    again = CachedTeacher(teacher, path, log=lambda s: None)
    assert [None if c is None else c[0, 0] for c in (again(im, cam) for im in images)] == [1.0, 2.0, None]
    assert asked == [0, 1, 2]  # all three from the file, the refused one too
    again(images[0], Camera(8, 6, 6.0, 6.0, 4.0, 3.0))  # another camera: another key
    assert asked == [0, 1, 2, 0]
    teacher.identity = {"teacher": "crossfire", "component": "b"}  # retrained: its old fixes do not count
    CachedTeacher(teacher, path, log=lambda s: None)(images[1], cam)
    assert asked[-1] == 1 and len(asked) == 5
    path.write_bytes(b"not a checkpoint")
    logs = []
    CachedTeacher(teacher, path, log=logs.append)(images[1], cam)
    assert len(asked) == 6 and "ignoring unreadable" in logs[0]
