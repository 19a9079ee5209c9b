"""cbct: cone-beam CT reconstruction for dental CBCT (CPU and CUDA operators, FDK, learned corrections)."""

from cbct.fdk import fdk, fdk_filter
from cbct.geometry import ConeGeometry, VolumeGrid
from cbct.io import read_scan, write_scan
from cbct.operators import backproject, project, segmented_backproject
from cbct.pipeline import Pipeline, PipelineResult, Stage, load_pipeline, run_pipeline
from cbct.scan import Scan
from cbct.batch import run_batch
from cbct.version import __version__

__all__ = [
    "ConeGeometry", "VolumeGrid", "project", "backproject", "segmented_backproject", "fdk", "fdk_filter",
    "Scan", "read_scan", "write_scan", "Pipeline", "Stage", "PipelineResult", "load_pipeline", "run_pipeline",
    "run_batch", "__version__",
]
