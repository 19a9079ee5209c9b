"""The CPU backend: the kernel entry points that :mod:`cbct.operators` dispatches to for NumPy arrays."""

from cbct.cpu.joseph import backproject_matched, project
from cbct.cpu.voxel_backprojection import backproject_fdk

__all__ = ["project", "backproject_fdk", "backproject_matched"]
