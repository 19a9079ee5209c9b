"""Simulation of scans: noise (here), rigid patient motion (``motion``), sparse views (``sparse``)."""
