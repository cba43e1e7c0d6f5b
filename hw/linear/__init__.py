"""Linear-attention decode datapath generator: its configuration, component and cycle model (``cycles``)."""

from .decode import LinearDecode, LinearDecodeConfig, pipeline_depth

__all__ = ["LinearDecode", "LinearDecodeConfig", "pipeline_depth"]
