"""FDK: weights, ramp filters and the reconstruction."""

from cbct.fdk.filters import FILTERS
from cbct.fdk.reconstruction import fdk, fdk_filter

__all__ = ["FILTERS", "fdk", "fdk_filter"]
