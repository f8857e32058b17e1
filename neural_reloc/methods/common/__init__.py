"""Machinery every relocalization method shares (one place, used by each method's
folder): the localization config bases (``config.py``), the iterate-correspondences-PnP
loop (``iterative.py``), descriptor matching (``matching.py``) and retrieval over a
map's rendered views (``retrieval.py``). PnP + covariance: :mod:`neural_reloc.geometry.pnp`."""
