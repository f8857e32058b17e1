"""Dataset loaders: every format round-trips a synthetic scene written in its *native*
conventions (by hand here, never through frames.py), and projecting known 3D points
with the loaded pose + camera must give the ground-truth pixels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from neural_reloc.data import (
    DatasetError,
    PosedImages,
    detect_format,
    load_cambridge,
    load_colmap,
    load_dataset,
    load_llff,
    load_seven_scenes,
    load_transforms_json,
)
from neural_reloc.geometry.camera import Camera
from neural_reloc.geometry.frames import opencv_w2c_from_opengl_c2w

W, H = 64, 48
FOX = Path(__file__).resolve().parents[2] / "shared/data/fox"


# ------------------------------------------------------------------ ground truth
def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_w2c(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """OpenCV world-to-camera poses on a sphere of radius ~4 looking at the origin,
    with a random roll (so x/y axis slips cannot cancel out)."""
    out = []
    for _ in range(n):
        d = rng.normal(size=3)
        d[2] = abs(d[2]) * 0.5
        C = 4.0 * d / np.linalg.norm(d) + rng.normal(scale=0.1, size=3)
        z = -C / np.linalg.norm(C)  # forward: towards the origin
        x = np.cross(np.array([0.0, 0.0, -1.0]), z)  # right = down x forward
        x /= np.linalg.norm(x)
        y = np.cross(z, x)  # down
        R_c2w = np.stack([x, y, z], axis=1) @ _rot_z(rng.uniform(-0.5, 0.5))
        T = np.eye(4)
        T[:3, :3] = R_c2w.T
        T[:3, 3] = -R_c2w.T @ C
        out.append(T)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def points(rng) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(100, 3))


def project(w2c: np.ndarray, cam: Camera, pts: np.ndarray) -> np.ndarray:
    pc = pts @ w2c[:3, :3].T + w2c[:3, 3]
    uv, front = cam.project(pc)
    assert front.all()
    return uv


def assert_reprojects(ds: PosedImages, gt_w2c, gt_cams, pts, tol: float = 1e-6) -> None:
    """Pixels from the LOADED pose/camera equal the ground-truth pixels."""
    assert len(ds) == len(gt_w2c)
    for i in range(len(ds)):
        uv_gt = project(gt_w2c[i], gt_cams[i], pts)
        uv = project(opencv_w2c_from_opengl_c2w(ds.c2w_opengl[i]), ds.cameras[i], pts)
        err = np.abs(uv - uv_gt).max()
        assert err < tol, f"frame {i} ({ds.names[i]}): reprojection differs by {err} px"


def write_image(path: Path, w: int = W, h: int = H, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def opengl_c2w_by_hand(w2c: np.ndarray) -> np.ndarray:
    """What instant-ngp / nerfstudio write: camera-to-world with y and z flipped."""
    c2w = np.linalg.inv(w2c)
    c2w[:3, 1] *= -1.0
    c2w[:3, 2] *= -1.0
    return c2w


# ------------------------------------------------------------------ transforms.json
def _write_transforms(root: Path, w2c, cams, names, extra=None, frame_extra=None) -> Path:
    g = cams[0]
    meta = {
        "camera_model": "OPENCV",
        "fl_x": g.fx, "fl_y": g.fy, "cx": g.cx, "cy": g.cy, "w": g.width, "h": g.height,
        "k1": g.k1, "k2": g.k2, "p1": g.p1, "p2": g.p2, "k3": g.k3,
        "aabb_scale": 16,
        "frames": [],
    }  # fmt: skip
    meta.update(extra or {})
    for i, (T, c, n) in enumerate(zip(w2c, cams, names)):
        fr = {"file_path": n, "transform_matrix": opengl_c2w_by_hand(T).tolist()}
        if c != g:  # per-frame override of the intrinsics
            fr.update({"fl_x": c.fx, "fl_y": c.fy, "cx": c.cx, "cy": c.cy, "k1": c.k1})
        fr.update((frame_extra or {}).get(i, {}))
        meta["frames"].append(fr)
        write_image(root / n, c.width, c.height, seed=i)
    path = root / "transforms.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


def _tj_scene(rng, n=5):
    w2c = make_w2c(rng, n)
    base = Camera(W, H, 55.0, 56.0, 31.7, 24.4, k1=0.05, k2=-0.02, p1=0.001, p2=-0.002, k3=0.003)
    cams = [base] * n
    cams[1] = Camera(W, H, 60.0, 61.0, 33.0, 23.0, k1=-0.04, k2=-0.02, p1=0.001, p2=-0.002, k3=0.003)
    names = [f"images/{i:04d}.png" for i in range(n)]
    return w2c, cams, names


def test_transforms_json_roundtrip(tmp_path, rng, points):
    w2c, cams, names = _tj_scene(rng)
    path = _write_transforms(
        tmp_path, w2c, cams, names,
        extra={"applied_transform": np.eye(4)[:3].tolist(), "scale": 0.5, "offset": [0, 0, 1]},
    )  # fmt: skip
    ds = load_transforms_json(path)
    assert_reprojects(ds, w2c, cams, points)
    assert ds.names == names
    assert ds.split == {"train": list(range(5))}
    with pytest.raises(DatasetError, match="no split named 'test'"):
        ds.indices("test")
    assert ds.extras["aabb_scale"] == 16 and ds.extras["scale"] == 0.5
    assert ds.extras["applied_transform"].shape == (3, 4)
    assert ds.cameras[1].fx == 60.0 and ds.cameras[1].k1 == -0.04 and ds.cameras[1].k2 == -0.02
    # Same thing through the auto-detection (folder and file).
    assert detect_format(tmp_path) == ("transforms_json", tmp_path)
    assert_reprojects(load_dataset(tmp_path), w2c, cams, points)


def test_transforms_json_split_json_and_downscale(tmp_path, rng):
    w2c, cams, names = _tj_scene(rng)
    path = _write_transforms(tmp_path, w2c, cams, names)
    (tmp_path / "split.json").write_text(
        json.dumps({"train": ["./images/0000.png", "images/0002.png", "0004.png"], "test": ["images/0001.png"]})
    )
    ds = load_transforms_json(path)
    assert ds.split == {"train": [0, 2, 4], "test": [1]}
    assert ds.subset("test").names == ["images/0001.png"]
    # The explicit split file wins over split.json.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"train": ["images/0003.png"], "test": ["images/0000.png"]}))
    assert load_transforms_json(path, split_file=other).split == {"train": [3], "test": [0]}
    # Lazy downscale: half-size image and matching camera.
    half = ds.with_downscale(2)
    assert half.image(0).shape == (H // 2, W // 2, 3)
    assert half.camera(0) == ds.cameras[0].resized(W // 2, H // 2)
    assert half.camera(0).fx == pytest.approx(ds.cameras[0].fx / 2)


def test_transforms_json_nerfstudio_split_keys_and_depth(tmp_path, rng, points):
    w2c, cams, names = _tj_scene(rng)
    depth_mm = np.full((H, W), 1500, dtype=np.uint16)
    depth_mm[0, 0] = 0
    frame_extra = {}
    for i in range(len(names)):
        dp = tmp_path / "depths" / f"{i:04d}.png"
        dp.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(dp), depth_mm)
        frame_extra[i] = {"depth_file_path": f"depths/{i:04d}.png"}
    path = _write_transforms(
        tmp_path, w2c, cams, names, frame_extra=frame_extra,
        extra={
            "train_filenames": ["images/0000.png", "images/0001.png", "images/0002.png"],
            "val_filenames": ["images/0003.png"],
            "test_filenames": ["images/0004.png"],
            "depth_unit_scale_factor": 0.002,
        },
    )  # fmt: skip
    ds = load_transforms_json(path)
    assert ds.split == {"train": [0, 1, 2], "val": [3], "test": [4]}
    assert ds.depth_scale == 0.002
    d = ds.depth(2)
    assert d.dtype == np.float32 and d[5, 5] == pytest.approx(3.0) and d[0, 0] == 0.0
    assert_reprojects(ds, w2c, cams, points)


def test_blender_layout(tmp_path, rng, points):
    """transforms_{train,val,test}.json, camera_angle_x only, no w/h, no extensions."""
    w2c = make_w2c(rng, 6)
    angle_x = 0.69
    f = 0.5 * W / np.tan(0.5 * angle_x)
    cam = Camera(W, H, f, f, W / 2, H / 2)
    k = 0
    for split_name, count in (("train", 3), ("val", 1), ("test", 2)):
        frames = []
        for j in range(count):
            write_image(tmp_path / split_name / f"r_{j}.png", seed=k)
            frames.append({"file_path": f"./{split_name}/r_{j}", "transform_matrix": opengl_c2w_by_hand(w2c[k]).tolist()})
            k += 1
        (tmp_path / f"transforms_{split_name}.json").write_text(
            json.dumps({"camera_angle_x": angle_x, "frames": frames})
        )
    ds = load_dataset(tmp_path)
    assert ds.split == {"train": [0, 1, 2], "val": [3], "test": [4, 5]}
    assert ds.names[0] == "train/r_0.png" and (ds.cameras[0].width, ds.cameras[0].height) == (W, H)
    assert ds.extras["format"] == "blender"
    assert_reprojects(ds, w2c, [cam] * 6, points)
    # A single Blender file is an ordinary transforms file without splits.
    single = load_transforms_json(tmp_path / "transforms_test.json")
    assert single.split == {"train": [0, 1]}


def test_transforms_json_errors(tmp_path, rng):
    w2c, cams, names = _tj_scene(rng)
    path = _write_transforms(tmp_path, w2c, cams, names)
    meta = json.loads(path.read_text())

    bad = json.loads(json.dumps(meta))
    bad["frames"][1]["transform_matrix"][0][0] *= 2.0  # not a rotation any more
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"bad\.json: frame 1 \('images/0001\.png'\).*not a rotation"):
        load_transforms_json(tmp_path / "bad.json")

    (tmp_path / "images/0002.png").unlink()
    (tmp_path / "images/0003.png").unlink()
    with pytest.raises(DatasetError, match=r"2 of 5 images missing: .*0002\.png, .*0003\.png"):
        load_transforms_json(path)
    write_image(tmp_path / "images/0002.png")
    write_image(tmp_path / "images/0003.png")

    (tmp_path / "split.json").write_text(json.dumps({"train": names, "test": []}))
    with pytest.raises(DatasetError, match=r"split\.json: split 'test' is empty"):
        load_transforms_json(path)
    (tmp_path / "split.json").write_text(json.dumps({"train": names, "test": ["images/9999.png"]}))
    with pytest.raises(DatasetError, match=r"match no frame: images/9999\.png"):
        load_transforms_json(path)
    (tmp_path / "split.json").unlink()

    fish = dict(meta, camera_model="OPENCV_FISHEYE")
    (tmp_path / "fish.json").write_text(json.dumps(fish))
    with pytest.raises(DatasetError, match="OPENCV_FISHEYE.*not supported"):
        load_transforms_json(tmp_path / "fish.json")
    equi = dict(meta, camera_model="EQUIRECTANGULAR")
    (tmp_path / "equi.json").write_text(json.dumps(equi))
    with pytest.raises(DatasetError, match="EQUIRECTANGULAR.*not supported"):
        load_transforms_json(tmp_path / "equi.json")


# ------------------------------------------------------------------ COLMAP
def _quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Hamilton quaternion (w, x, y, z) of a rotation matrix, written independently of
    the project's se3 module (Shepperd's method via the largest diagonal term)."""
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0] * 4
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)


COLMAP_CAMERAS = [
    ("SIMPLE_PINHOLE", [52.0, 32.5, 23.5]),
    ("PINHOLE", [52.0, 53.0, 31.0, 24.5]),
    ("SIMPLE_RADIAL", [52.0, 32.0, 24.0, 0.04]),
    ("RADIAL", [52.0, 32.0, 24.0, 0.04, -0.01]),
    ("OPENCV", [52.0, 53.0, 32.2, 23.8, 0.04, -0.01, 0.002, -0.001]),
    ("FULL_OPENCV", [52.0, 53.0, 32.2, 23.8, -0.03, 0.01, 0.001, 0.002, 0.004, 0.0, 0.0, 0.0]),
]


def _our_camera(model: str, p: list[float], w: int = W, h: int = H) -> Camera:
    if model == "SIMPLE_PINHOLE":
        return Camera(w, h, p[0], p[0], p[1], p[2])
    if model == "PINHOLE":
        return Camera(w, h, *p)
    if model == "SIMPLE_RADIAL":
        return Camera(w, h, p[0], p[0], p[1], p[2], k1=p[3])
    if model == "RADIAL":
        return Camera(w, h, p[0], p[0], p[1], p[2], k1=p[3], k2=p[4])
    return Camera(w, h, *p[:4], k1=p[4], k2=p[5], p1=p[6], p2=p[7], k3=p[8] if len(p) > 8 else 0.0)


def _write_colmap_text(model_dir: Path, w2c, cams, names, size=(W, H)) -> None:
    """cameras.txt / images.txt / points3D.txt exactly as COLMAP writes them."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / "cameras.txt", "w") as f:
        f.write("# Camera list with one line of data per camera:\n")
        f.write("#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n")
        f.writelines(
            f"{cid} {model} {size[0]} {size[1]} " + " ".join(repr(float(v)) for v in params) + "\n"
            for cid, (model, params) in enumerate(cams, start=1)
        )
    with open(model_dir / "images.txt", "w") as f:
        f.write("# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n# POINTS2D[] as (X, Y, POINT3D_ID)\n")
        for iid, (T, name) in enumerate(zip(w2c, names), start=1):
            q, t = _quat_wxyz(T[:3, :3]), T[:3, 3]
            cid = (iid - 1) % len(cams) + 1
            vals = " ".join(repr(float(v)) for v in [*q, *t])
            f.write(f"{iid} {vals} {cid} {name}\n\n")
    (model_dir / "points3D.txt").write_text("# 3D point list\n")


def test_colmap_roundtrip_text_and_binary(tmp_path, rng, points):
    import pycolmap

    n = 10
    w2c = make_w2c(rng, n)
    names = [f"img_{i:02d}.png" for i in range(n)]
    shuffled = list(rng.permutation(n))  # COLMAP image ids need not follow name order
    model = tmp_path / "scene/sparse/0"
    _write_colmap_text(model, [w2c[i] for i in shuffled], COLMAP_CAMERAS, [names[i] for i in shuffled])
    for i, name in enumerate(names):
        write_image(tmp_path / "scene/images" / name, seed=i)
    gt_cams = {}
    for k, i in enumerate(shuffled):
        m, p = COLMAP_CAMERAS[k % len(COLMAP_CAMERAS)]
        gt_cams[i] = _our_camera(m, p)
    gt_cams = [gt_cams[i] for i in range(n)]

    ds = load_colmap(model)
    assert ds.names == names
    assert ds.image_paths[0] == (tmp_path / "scene/images/img_00.png").resolve()
    assert ds.split == {"train": [1, 2, 3, 4, 5, 6, 7, 9], "test": [0, 8]}
    assert_reprojects(ds, w2c, gt_cams, points, tol=1e-6)

    # Cross-check against COLMAP's own projection (independent of our Camera class).
    rec = pycolmap.Reconstruction(str(model))
    for im in rec.images.values():
        i = names.index(im.name)
        cfw = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        uv_colmap = rec.cameras[im.camera_id].img_from_cam(cfw * points)
        uv = project(opencv_w2c_from_opengl_c2w(ds.c2w_opengl[i]), ds.cameras[i], points)
        assert np.abs(uv - uv_colmap).max() < 1e-6

    # Binary model, and the auto-detection via the scene folder (sparse/0).
    binary = tmp_path / "scene/sparse/1"
    binary.mkdir()
    rec.write_binary(str(binary))
    assert (binary / "cameras.bin").is_file()
    assert_reprojects(load_colmap(binary), w2c, gt_cams, points)
    assert detect_format(tmp_path / "scene") == ("colmap", tmp_path / "scene/sparse/0")
    assert_reprojects(load_dataset(tmp_path / "scene"), w2c, gt_cams, points)

    # split.json next to the images folder.
    (tmp_path / "scene/split.json").write_text(
        json.dumps({"train": [f"images/{n}" for n in names[:7]], "test": names[7:]})
    )
    assert load_colmap(model).split == {"train": list(range(7)), "test": [7, 8, 9]}


def test_colmap_rescaled_camera_and_errors(tmp_path, rng, points):
    w2c = make_w2c(rng, 3)
    names = ["a.png", "b.png", "c.png"]
    model = tmp_path / "sparse"
    # Model built on 2x larger images than the ones on disk (same aspect ratio).
    params = [104.0, 106.0, 64.4, 47.6, 0.04, -0.01, 0.002, -0.001]
    _write_colmap_text(model, w2c, [("OPENCV", params)], names, size=(2 * W, 2 * H))
    for i, n in enumerate(names):
        write_image(tmp_path / "images" / n, seed=i)
    ds = load_colmap(model)
    gt = _our_camera("OPENCV", params, 2 * W, 2 * H).resized(W, H)
    assert ds.extras["rescaled_cameras"] == {1: ((2 * W, 2 * H), (W, H))}
    assert_reprojects(ds, w2c, [gt] * 3, points)

    # Missing images dir: the error says where it looked.
    (tmp_path / "images").rename(tmp_path / "imgs")
    with pytest.raises(DatasetError, match=r"cannot find the image folder.*looked for 'a\.png' in: .*images"):
        load_colmap(model)
    (tmp_path / "imgs").rename(tmp_path / "images")
    (tmp_path / "images/b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 images missing: .*b\.png"):
        load_colmap(model, images_dir=tmp_path / "images")
    write_image(tmp_path / "images/b.png")

    full = [("FULL_OPENCV", [52.0, 53.0, 32.0, 24.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0])]
    _write_colmap_text(model, w2c, full, names)
    with pytest.raises(DatasetError, match=r"FULL_OPENCV with rational terms k4\.\.k6"):
        load_colmap(model)
    _write_colmap_text(model, w2c, [("OPENCV_FISHEYE", [52.0, 53.0, 32.0, 24.0, 0.0, 0.0, 0.0, 0.0])], names)
    with pytest.raises(DatasetError, match=r"camera model OPENCV_FISHEYE is not supported"):
        load_colmap(model)


# ------------------------------------------------------------------ 7-Scenes
def test_seven_scenes_roundtrip(tmp_path, rng, points):
    w2c = make_w2c(rng, 5)
    seqs = {"seq-01": [0, 1, 2], "seq-02": [3, 4]}
    grad = np.tile(np.arange(640, dtype=np.uint8)[None, :, None], (480, 1, 3))  # compresses well
    depth = np.full((480, 640), 2000, dtype=np.uint16)
    depth[10:20, 10:20] = 65535  # invalid
    for seq, idx in seqs.items():
        for j, i in enumerate(idx):
            stem = tmp_path / seq / f"frame-{j:06d}"
            stem.parent.mkdir(exist_ok=True)
            cv2.imwrite(f"{stem}.color.png", grad)
            cv2.imwrite(f"{stem}.depth.png", depth)
            c2w = np.linalg.inv(w2c[i])  # camera-to-world, OpenCV camera axes
            np.savetxt(f"{stem}.pose.txt", c2w, fmt="%.17e", delimiter="\t")
    (tmp_path / "TrainSplit.txt").write_text("sequence1\n")
    (tmp_path / "TestSplit.txt").write_text("sequence2\n\n")
    ds = load_seven_scenes(tmp_path)
    assert ds.split == {"train": [0, 1, 2], "test": [3, 4]}
    assert ds.names[3] == "seq-02/frame-000000.color.png"
    cam = Camera(640, 480, 525.0, 525.0, 320.0, 240.0)
    assert ds.cameras[0] == cam
    assert_reprojects(ds, w2c, [cam] * 5, points)
    d = ds.depth(0)
    assert d[15, 15] == 0.0 and d[100, 100] == pytest.approx(2.0)
    assert ds.image(0).shape == (480, 640, 3)
    assert detect_format(tmp_path)[0] == "seven_scenes"

    (tmp_path / "TestSplit.txt").write_text("sequence2\nseq 3\n")
    with pytest.raises(DatasetError, match=r"TestSplit\.txt:2: cannot parse 'seq 3'"):
        load_seven_scenes(tmp_path)
    (tmp_path / "TestSplit.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"TestSplit\.txt: lists no sequences \(empty split\)"):
        load_seven_scenes(tmp_path)
    (tmp_path / "TestSplit.txt").write_text("sequence2\n")
    bad = np.linalg.inv(w2c[3])
    bad[:3, :3] *= 1.5
    np.savetxt(tmp_path / "seq-02/frame-000000.pose.txt", bad)
    with pytest.raises(DatasetError, match=r"seq-02/frame-000000\.pose\.txt.*not a rotation"):
        load_seven_scenes(tmp_path)


# ------------------------------------------------------------------ Cambridge
def _write_cambridge(root: Path, w2c, focals, splits, nvm=True):
    names = [f"seq{1 + i // 3}/frame{i + 1:05d}.png" for i in range(len(w2c))]
    for i, n in enumerate(names):
        write_image(root / n, seed=i)
    for split_name, idx in splits.items():
        lines = [
            "Visual Landmark Dataset V1",
            "ImageFile, Camera Position [X Y Z W P Q R]",
            "",
        ]
        for i in idx:
            R, t = w2c[i][:3, :3], w2c[i][:3, 3]
            C = -R.T @ t  # camera centre in world
            q = _quat_wxyz(R)  # world-to-camera rotation, w first
            if i % 2:
                q = -q  # both signs occur in the wild
            lines.append(names[i] + " " + " ".join(repr(float(v)) for v in [*C, *q]))
        (root / f"dataset_{split_name}.txt").write_text("\n".join(lines) + "\n")
    if nvm:
        cams = []
        for i, n in enumerate(names):
            R, t = w2c[i][:3, :3], w2c[i][:3, 3]
            C, q = -R.T @ t, _quat_wxyz(R)
            cams.append(
                n.replace(".png", ".jpg") + f" {focals[i]!r} " + " ".join(repr(float(v)) for v in [*q, *C]) + " -0.01 0"
            )
        text = "NVM_V3\n\n" + f"{len(cams)}\n" + "\n".join(cams) + "\n\n1\n0 0 0 255 255 255 1 0 0 1.0 2.0\n"
        (root / "reconstruction.nvm").write_text(text)
    return names


def test_cambridge_roundtrip(tmp_path, rng, points):
    w2c = make_w2c(rng, 6)
    focals = [50.0 + i for i in range(6)]
    names = _write_cambridge(tmp_path, w2c, focals, {"train": [0, 1, 2, 3], "test": [4, 5]})
    ds = load_cambridge(tmp_path)
    assert ds.names == names
    assert ds.split == {"train": [0, 1, 2, 3], "test": [4, 5]}
    gt = [Camera(W, H, f, f, W / 2, H / 2) for f in focals]
    assert_reprojects(ds, w2c, gt, points)
    assert ds.extras["nvm_radial"].tolist() == [-0.01] * 6
    assert detect_format(tmp_path)[0] == "cambridge"

    (tmp_path / "reconstruction.nvm").unlink()
    with pytest.raises(DatasetError, match=r"no reconstruction\.nvm.*pass focal_length"):
        load_cambridge(tmp_path)
    ds = load_cambridge(tmp_path, focal_length=55.0)
    assert_reprojects(ds, w2c, [Camera(W, H, 55.0, 55.0, W / 2, H / 2)] * 6, points)

    with open(tmp_path / "dataset_test.txt", "a") as f:
        f.write("seq2/frame00006.png 1 2 3 1 0 0\n")
    with pytest.raises(DatasetError, match=r"dataset_test\.txt:6: expected 'image X Y Z W P Q R'"):
        load_cambridge(tmp_path, focal_length=55.0)


# ------------------------------------------------------------------ LLFF
def _write_llff(root: Path, w2c, f_full, full=(2 * W, 2 * H), factor_sizes=((None, (W, H)),)):
    rows = []
    for T in w2c:
        c2w = np.linalg.inv(T)  # OpenCV camera-to-world: columns [right, down, forward]
        r, d, fw, t = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
        hwf = np.array([full[1], full[0], f_full])
        blk = np.stack([d, r, -fw, t, hwf], axis=1)  # LLFF: [down, right, backwards | t | hwf]
        rows.append(np.concatenate([blk.ravel(), [0.5, 10.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    for factor, (w, h) in factor_sizes:
        d = root / ("images" if factor is None else f"images_{factor}")
        for i in range(len(w2c)):
            write_image(d / f"IMG_{i:04d}.JPG", w, h, seed=i)


def test_llff_roundtrip(tmp_path, rng, points):
    n = 9
    w2c = make_w2c(rng, n)
    f_full = 110.0
    _write_llff(tmp_path, w2c, f_full, factor_sizes=((None, (W, H)), (2, (W // 2, H // 2))))
    ds = load_llff(tmp_path)
    gt = Camera(W, H, f_full / 2, f_full / 2, W / 2, H / 2)
    assert ds.cameras[0] == gt
    assert ds.split == {"train": [1, 2, 3, 4, 5, 6, 7], "test": [0, 8]}
    assert ds.extras["near_far"].shape == (n, 2)
    assert_reprojects(ds, w2c, [gt] * n, points)
    small = load_llff(tmp_path, factor=2)
    gt2 = Camera(W // 2, H // 2, f_full / 4, f_full / 4, W / 4, H / 4)
    assert small.names[0] == "images_2/IMG_0000.JPG" and small.cameras[0] == gt2
    assert_reprojects(small, w2c, [gt2] * n, points)
    assert_reprojects(load_dataset(tmp_path), w2c, [gt] * n, points)

    (tmp_path / "images/IMG_0003.JPG").unlink()
    with pytest.raises(DatasetError, match=r"count mismatch: poses_bounds\.npy has 9 poses but .*images has 8"):
        load_llff(tmp_path)


# ------------------------------------------------------------------ auto-detection
def test_unknown_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"unknown dataset layout; looked for .*transforms.*COLMAP.*7-Scenes.*Cambridge.*LLFF"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset format 'bogus'"):
        load_dataset(tmp_path, format="bogus")


# ------------------------------------------------------------------ real data (fox)
@pytest.mark.skipif(not (FOX / "transforms.json").is_file(), reason="shared fox data not present")
def test_fox():
    ds = load_dataset(FOX)
    assert len(ds) == 67
    split = json.loads((FOX / "split.json").read_text())
    assert len(ds.split["train"]) == 50 and len(ds.split["test"]) == 17
    assert [ds.names[i] for i in ds.split["train"]] == split["train"]
    assert [ds.names[i] for i in ds.split["test"]] == split["test"]
    c = ds.cameras[0]
    assert (c.width, c.height) == (1080, 1920)
    assert (c.fx, c.fy, c.cx, c.cy) == (1375.52, 1374.49, 554.558, 965.268)
    assert (c.k1, c.k2, c.p1, c.p2) == (0.0578421, -0.0805099, -0.000980296, 0.00015575)
    assert ds.extras["aabb_scale"] == 4
    assert ds.image(0).shape == (1920, 1080, 3)  # 1080x1920 (W x H)
    small = ds.with_max_size(480)
    assert small.image(1).shape == (480, 270, 3)
    sc = small.camera(1)
    assert (sc.width, sc.height) == (270, 480)
    assert sc.fx == pytest.approx(1375.52 / 4) and sc.cy == pytest.approx(965.268 / 4)
    assert sc.k1 == c.k1
