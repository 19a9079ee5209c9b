"""Converters between :class:`cbct.ConeGeometry` and the geometry conventions of TIGRE, ASTRA and RTK."""
