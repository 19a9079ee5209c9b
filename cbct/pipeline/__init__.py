"""Pipeline engine: declarative stages over a :class:`PipelineState`.

``run_pipeline(pipeline, scan, device=None, profile=False)`` runs a :class:`Pipeline` (a YAML file in ``pipelines/``,
a built-in name such as ``"fdk"``, or one built in Python from :class:`Stage` s) and returns a
:class:`PipelineResult`. Stages are looked up in :data:`STAGES` and imported when used.
"""

from cbct.pipeline.engine import PipelineError, PipelineResult, run_pipeline
from cbct.pipeline.registry import STAGES, resolve_stage
from cbct.schema import SchemaError
from cbct.pipeline.spec import Pipeline, Stage, builtin_pipelines, load_pipeline
from cbct.pipeline.state import PipelineState

__all__ = ["PipelineState", "Pipeline", "Stage", "run_pipeline", "PipelineResult", "PipelineError", "SchemaError",
           "STAGES", "resolve_stage", "load_pipeline", "builtin_pipelines"]
