"""The linear-attention decode datapath (``docs/linear-hw.md``): configuration, generator,
the pipeline depth the cycle model needs, and the cycle model itself (``cycles``)."""

from .config import NORM_EXTRA_DEPTH, PIPELININGS, LinearDecodeConfig, pipeline_depth
from .decode import LinearDecode

__all__ = ["LinearDecodeConfig", "LinearDecode", "pipeline_depth", "PIPELININGS", "NORM_EXTRA_DEPTH"]
