"""Pipeline engine: stages over a :class:`PipelineState`."""

from cbct.pipeline.state import PipelineState

__all__ = ["PipelineState"]
