"""ViTCoD accelerator generator: Denser + Sparser Engines, integer softmax, double-buffered loads."""

from .accelerator import VitcodAccelerator
from .config import ERR_COL_IDX, ERR_ROW_PTR, ERR_SIZE, VitcodConfig

__all__ = ["VitcodAccelerator", "VitcodConfig", "ERR_SIZE", "ERR_ROW_PTR", "ERR_COL_IDX"]
