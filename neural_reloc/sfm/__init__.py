"""Structure from known poses, as hloc does it: SIFT + RootSIFT (:mod:`.features`),
pose-neighbour pairs (:mod:`.pairs`), matching verified by the known epipolar geometry
(:mod:`.matching`), tracks (:mod:`.tracks`) and filtered multi-view triangulation
(:mod:`.triangulation`), chained by :func:`.known_poses.triangulate_known_poses`.

Shared by the classical method (its map and its queries), the neural map's sparse depth
for RGB-only data (:mod:`neural_reloc.nerf.sparse_depth`) and descriptor synthesis
(:mod:`neural_reloc.synthesis.features`); it imports nothing from ``methods/``.
Settings: :mod:`.config` (held by the classical method's config).
"""
