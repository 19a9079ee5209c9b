"""BBC-Recon: sparse-view CBCT by bidirectional flow-guided projection completion, reconstruction and restoration.

Modules: ``baselines`` (linear interpolation of missing views; the angular bookkeeping of which acquired views
bracket a missing view lives below, in :mod:`cbct.angles`), ``model`` (the flow completion network, torch), ``inference`` (running it over a
scan, throughput), ``restoration`` (the post-reconstruction network), ``data``, ``heldout`` (the RTK-projected
held-out set), ``train``, ``slices``, ``evaluate`` and ``stage`` (pipeline stages).
The torch modules are imported lazily so that the NumPy parts work without torch.
"""

from cbct.angles import CompletionPlan, bracket_views, dense_angles, geometry_at_angles, is_full_circle, plan_completion
from cbct.bbc.baselines import linear_completion

__all__ = [
    "CompletionPlan",
    "bracket_views",
    "dense_angles",
    "geometry_at_angles",
    "is_full_circle",
    "plan_completion",
    "linear_completion",
]
