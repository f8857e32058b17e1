"""Building PoseMap on a map's frozen field (``add-method posemap``, or ``build-map
--method posemap``: the field first, as any map). Stages, each kept in the work dir so
an interrupted run resumes (see :mod:`.training`): NeRF-P's pose branch, the cached
renders, APR-Net, its validation error; then, with unlabeled images, the alignment.

``add-method posemap --unlabeled U`` on a map that already has a PoseMap component with
these build settings refines that component (alignment only); otherwise it trains the
whole component and aligns it. With ``align.teacher`` another method of the map
localizes the unlabeled images first (:func:`teacher_from_bundle`), its fixes kept as they
come (:class:`CachedTeacher`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ...map_bundle import MapError
from ...nerf.train import NeuralMapTrainer, atomic_torch_save
from .alignment import align
from .apr_net import AprNet
from .config import PoseMapConfig
from .pose_branch import HEAD_NAME, PoseMapDecoder, attach_pose_head
from .training import (ViewCache, cache_identity, real_views, render_views, train_apr, train_pose_branch, validate,
                       validate_on_real)

#: Tensor-name prefixes of the component (unique across a map's components); the head
#: is stored as ``map.field.heads.posemap.*``.
APR, DECODER = "posemap_apr", "posemap_decoder"
#: Config sections that do not decide the labelled model (alignment, run-time settings).
NOT_BUILD = ("localization", "align")


def labelled_key(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NOT_BUILD}


class PoseMapTrainer(NeuralMapTrainer):
    def __init__(self, data, cfg: PoseMapConfig, device: torch.device, work_dir: Path,
                 progress: Callable | None = None, log: Callable[[str], None] = print,
                 unlabeled: str | Path | None = None, teacher=None):
        self.method_config = cfg
        self.teacher = teacher  # (image, camera) -> c2w_opencv or None: align.teacher's fixes
        self.xcfg = cfg
        self.full_data = data  # APR-Net sees the images at its own size, not the field's
        self.unlabeled = unlabeled
        self.summary: dict = {}
        self._from_component = False
        super().__init__(data, cfg.map, device, work_dir, progress, log)

    def setup_extras(self) -> None:
        self.head = attach_pose_head(self.model, self.xcfg.posemap)
        self.decoder = PoseMapDecoder(self.xcfg.posemap).to(self.device)
        self.apr = AprNet(self.xcfg.apr).to(self.device)
        self.extra_modules[APR] = self.apr
        self.extra_modules[DECODER] = self.decoder

    def load_component(self, bundle) -> None:
        """Start from the map's own PoseMap component (refinement with unlabeled images)."""
        try:
            self.head.load_state_dict(bundle.module_state(f"map.field.heads.{HEAD_NAME}"))
            self.decoder.load_state_dict(bundle.module_state(DECODER))
            self.apr.load_state_dict(bundle.module_state(APR))
        except RuntimeError as e:
            raise MapError(f"{bundle.path}: its PoseMap weights do not match its config: {e}") from e
        self._from_component = True

    def _stage(self, name: str, ident, make: Callable[[], dict], load: Callable[[dict], None]) -> dict:
        path = self.work_dir / f"posemap_{name}.pt"
        if path.is_file():
            try:
                ck = torch.load(path, map_location="cpu", weights_only=True)
                if ck.get("ident") == ident:
                    load(ck)
                    self.log(f"posemap: {name} done in a previous run ({path})")
                    return ck.get("summary", {})
            except Exception as e:  # unreadable: do it again
                self.log(f"posemap: ignoring unreadable {path}: {e}")
        payload = make()
        atomic_torch_save({"ident": ident, **payload}, path)
        return payload.get("summary", {})

    def fit(self):
        state = super().fit()  # the field (no steps when adopted from a map)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        cfg, dev = self.xcfg, self.device
        ident = self.run_identity()
        ident = {**ident, "config": labelled_key(ident["config"])}
        data = self.full_data
        if not self._from_component:
            def branch() -> dict:
                for p in self.head.parameters():
                    p.requires_grad_(True)
                s = train_pose_branch(self.model, self.head, self.decoder, data, cfg, dev, self.progress, self.log)
                for p in self.head.parameters():
                    p.requires_grad_(False)
                return {"head": self.head.state_dict(), "decoder": self.decoder.state_dict(), "summary": s}

            def load_branch(ck):
                self.head.load_state_dict(ck["head"])
                self.decoder.load_state_dict(ck["decoder"])

            self.summary["nerf_p"] = self._stage("branch", ident, branch, load_branch)
            cache = self.view_cache()
            cams = self.apr_cameras(cache)

            def apr() -> dict:
                s = train_apr(self.apr, self.model, cache, cams, cfg, dev, self.progress, self.log)
                s["validation"] = validate(self.apr, cache, dev)
                return {"apr": self.apr.state_dict(), "summary": s}

            self.summary["apr"] = self._stage("apr", ident, apr, lambda ck: self.apr.load_state_dict(ck["apr"]))
            self.log(f"posemap: validation {self.summary['apr'].get('validation')}")
        if self.unlabeled is not None:
            from .unlabeled import load_unlabeled

            teacher = self.teacher
            if teacher is not None and getattr(teacher, "identity", None) is not None:
                teacher = CachedTeacher(teacher, self.work_dir / "posemap_teacher.pt", self.log)
            images, cams_u, teacher_c2w_opencv = load_unlabeled(self.unlabeled, cfg, data.camera(0), teacher,
                                                                self.progress)
            getattr(teacher, "close", lambda: None)()
            with_teacher = teacher_c2w_opencv is not None
            labelled = real_views(data, cfg) if with_teacher and cfg.align.teacher_labelled_batch > 0 else None
            s = align(self.apr, self.model, images, cams_u, cfg, dev, self.progress, self.log,
                      teacher_c2w_opencv=teacher_c2w_opencv, labelled=labelled)
            self.summary["alignment"] = {"source": str(self.unlabeled), **s}
            self.summary["alignment"]["validation"] = validate(self.apr, self.validation_views(), dev)
            if with_teacher:
                held = s["teacher"]["held_out"]
                real = validate_on_real(self.apr, images[held], teacher_c2w_opencv[held], dev)
                self.summary["alignment"]["validation_real"] = real
                self.log(f"posemap: validation on {len(held)} held-out images against the teacher's poses: {real}")
        self.apr.eval()
        return state

    def view_cache(self) -> ViewCache:
        ident = cache_identity(self.xcfg, self.full_data)
        holder: dict = {}

        def make() -> dict:
            holder["cache"] = render_views(self.model, self.full_data, self.xcfg, self.progress)
            return {"cache": holder["cache"].state()}

        self._stage("views", ident, make, lambda ck: holder.__setitem__("cache", ViewCache(**ck["cache"])))
        return holder["cache"]

    def validation_views(self) -> ViewCache:
        """The validation renders (re-validating after the alignment): this run's full cache
        when it trained APR-Net, else the validation renders alone (a fifth of the full
        cache's at the default rvs_per_view)."""
        if not self._from_component:
            return self.view_cache()
        return render_views(self.model, self.full_data, self.xcfg, self.progress, validation_only=True)

    def apr_cameras(self, cache: ViewCache):
        h, w = cache.real.shape[1:3]
        return [self.full_data.camera(i).resized(w, h) for i in range(len(self.full_data))]


def add_to_map(bundle, data, cfg: PoseMapConfig, device, work_dir, progress=None, log=print, unlabeled=None):
    """PoseMap on an existing map's frozen field (``add-method posemap [--unlabeled U]``)."""
    import dataclasses

    from ...config_io import from_dict, to_dict
    from ...nerf.config import NeuralMapConfig

    if unlabeled is not None and not Path(unlabeled).exists():
        from ...data.posed_images import DatasetError

        raise DatasetError(f"--unlabeled {unlabeled}: does not exist (give a folder of images, a posed dataset or a "
                           "rosbag2 bag)")
    cfg = dataclasses.replace(cfg, map=from_dict(NeuralMapConfig, bundle.manifest["field"]["config"]))
    teacher = None
    if unlabeled is not None and cfg.align.teacher:
        teacher = teacher_from_bundle(bundle, cfg.align.teacher, device)
    trainer = PoseMapTrainer(data, cfg, device, work_dir, progress=progress, log=log, unlabeled=unlabeled,
                             teacher=teacher)
    trainer.adopt_field(bundle)
    existing = bundle.manifest["components"].get("posemap")
    if unlabeled is not None and existing is not None and labelled_key(existing["config"]) == labelled_key(to_dict(cfg)):
        log("posemap: refining the map's PoseMap component with the unlabeled images")
        trainer.load_component(bundle)
    trainer.fit()
    return trainer.modules_to_save(), _manifest_summary(trainer.summary)


def teacher_from_bundle(bundle, method: str, device):
    """``align.teacher``: the map's ``method`` component as a function (image RGB, its
    camera) -> c2w_opencv of its fix from its own retrieval, or None where it gives none
    a robot would take (failed, unsure, or short of the node's acceptance thresholds:
    :meth:`~neural_reloc.tracking.RelocalizationSession.rejection_reason` with the
    default :class:`~neural_reloc.tracking.TrackingConfig`). The method is checked now (a
    :class:`MapError` when the map has no such matching method); its relocalizer is built
    at the first call and released by :meth:`close` on the returned function."""
    from ...geometry.frames import opencv_c2w_from_opencv_w2c
    from ...map_loading import component_entry
    from ...tracking import RelocalizationSession, TrackingConfig
    from ..registry import get_method

    components = bundle.manifest["components"]
    if method not in components:
        raise MapError(f"{bundle.path}: align.teacher={method!r} is not a method of this map (it has: "
                       f"{', '.join(sorted(components)) or 'none'}); add it first or pick another")
    entry = component_entry(bundle.manifest, method)
    spec = get_method(entry["method"])
    if entry["method"] == "posemap" or spec.relocalizer_factory is None:
        raise MapError(f"{bundle.path}: align.teacher={method!r} cannot teach PoseMap (pick a matching method: "
                       f"{', '.join(m for m in sorted(components) if m != 'posemap') or 'none on this map'})")
    held: dict = {}

    def localize(image_rgb, camera):
        if "session" not in held:
            reloc = spec.relocalizer_factory(bundle, device, {}, method=entry["method"])
            held["session"] = RelocalizationSession(reloc, TrackingConfig())
        res = held["session"].relocalizer.localize(image_rgb, camera, None)
        if held["session"].rejection_reason(res):
            return None
        return opencv_c2w_from_opencv_w2c(res.w2c_opencv)

    localize.close = held.clear  # the teacher's copy of the map is not needed once the images are localized
    localize.identity = teacher_identity(bundle, method, entry)
    return localize


def teacher_identity(bundle, method: str, entry: dict) -> dict:
    """What a teacher's fixes depend on: the method, its field's and its component's
    weights (checksums), the component's stored settings, the acceptance test's and this
    package's version. A cache of fixes (:class:`CachedTeacher`) is reused only for the same."""
    from ... import __version__
    from ...config_io import to_dict
    from ...tracking import TrackingConfig

    files = bundle.manifest.get("files", {})
    return {"teacher": method, "field": files.get(bundle.manifest["field"].get("file", ""), {}).get("sha256"),
            "component": files.get(entry.get("file", ""), {}).get("sha256"), "config": entry.get("config"),
            "acceptance": to_dict(TrackingConfig()), "version": __version__}


class CachedTeacher:
    """A teacher (:func:`teacher_from_bundle`) whose fixes are kept in ``path`` as they come,
    one atomic write per image, keyed by the image's and its camera's bytes: a killed
    ``add-method posemap --unlabeled`` run asks the teacher again only for the images it
    had not localized. A cache of another teacher (``identity``: the method, its field's
    and its component's checksums) is ignored."""

    def __init__(self, teacher, path: Path, log: Callable[[str], None] = print):
        self.teacher, self.path = teacher, Path(path)
        self.identity = teacher.identity
        self.c2w_opencv: dict[str, torch.Tensor | None] = {}
        if self.path.is_file():
            try:
                ck = torch.load(self.path, map_location="cpu", weights_only=True)
                if ck.get("ident") == self.identity:
                    self.c2w_opencv = dict(ck["c2w_opencv"])
                    log(f"posemap: {len(self.c2w_opencv)} teacher fixes from a previous run ({self.path})")
            except Exception as e:  # unreadable: localize again
                log(f"posemap: ignoring unreadable {self.path}: {e}")

    @staticmethod
    def key(image_rgb, camera) -> str:
        import dataclasses
        import hashlib

        fields = [getattr(camera, f.name) for f in dataclasses.fields(camera) if f.compare]  # not its source's name
        h = hashlib.sha256(repr(fields).encode())
        h.update(repr(image_rgb.shape).encode())
        h.update(memoryview(image_rgb.tobytes()))
        return h.hexdigest()

    def __call__(self, image_rgb, camera):
        k = self.key(image_rgb, camera)
        if k not in self.c2w_opencv:
            c2w_opencv = self.teacher(image_rgb, camera)
            self.c2w_opencv[k] = None if c2w_opencv is None else torch.as_tensor(c2w_opencv, dtype=torch.float64)
            atomic_torch_save({"ident": self.identity, "c2w_opencv": self.c2w_opencv}, self.path)
        c2w_opencv = self.c2w_opencv[k]
        return None if c2w_opencv is None else c2w_opencv.numpy()

    def close(self) -> None:
        getattr(self.teacher, "close", lambda: None)()


def _manifest_summary(summary: dict) -> dict:
    """The stages' figures for the manifest (loss histories left out but the APR's)."""
    out = {}
    for k, v in summary.items():
        out[k] = {kk: vv for kk, vv in v.items() if kk != "history" or k == "apr"} if isinstance(v, dict) else v
    return out


def attach_heads(model, config: dict) -> None:
    from ...config_io import from_dict

    attach_pose_head(model, from_dict(PoseMapConfig, config).posemap)


__all__ = ["APR", "DECODER", "CachedTeacher", "PoseMapTrainer", "add_to_map", "attach_heads", "teacher_from_bundle"]
