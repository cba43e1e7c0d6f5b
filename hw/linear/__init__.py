"""The linear-attention decode datapath (``docs/linear-hw.md``): configuration, generator,
the pipeline depth the cycle model needs, and the cycle model itself (``cycles``)."""

from .config import NORM_EXTRA_DEPTH, PIPELINE_DEPTH, LinearDecodeConfig, pipeline_depth
from .decode import LinearDecode

__all__ = ["LinearDecodeConfig", "LinearDecode", "pipeline_depth", "PIPELINE_DEPTH", "NORM_EXTRA_DEPTH"]
