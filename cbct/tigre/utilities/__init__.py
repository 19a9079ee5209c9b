"""TIGRE's ``tigre.utilities`` that its demos use: ``sample_loader``, ``CTnoise``, ``plotimg`` and ``plotproj``."""

from cbct.tigre.utilities import CTnoise, sample_loader
from cbct.tigre.utilities.plotting import plotimg, plotImg, plotproj, plotProj

__all__ = ["sample_loader", "CTnoise", "plotimg", "plotImg", "plotproj", "plotProj"]
