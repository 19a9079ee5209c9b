"""Exceptions raised by the readers and writers."""

from __future__ import annotations

__all__ = ["FormatError", "UnevenSpacingError"]


class FormatError(ValueError):
    """A file exists but cannot be read as the requested format (truncated, corrupt, missing fields)."""


class UnevenSpacingError(FormatError):
    """The slices of a DICOM series are not evenly spaced (and resampling was not requested)."""
