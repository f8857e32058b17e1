"""Posed image datasets: one type, many formats."""

from .posed_images import DatasetError, PosedImages

__all__ = ["DatasetError", "PosedImages"]
