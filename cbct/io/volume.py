"""Moved: :class:`cbct.volume.Volume` is a core type (this name stays until the last importers move)."""

from cbct.volume import Volume

__all__ = ["Volume"]
