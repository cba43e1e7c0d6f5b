"""Hardware of the integer-only ViT beyond attention (issue 16): linear layers and element-wise units.

Each block reproduces one op of ``attnforge.algo.vitcod.intvit`` (formulas in
``attnforge.int_ops`` and ``algo/tickets/export.py``) bit for bit:

* linear layers: int8 x int8 matmuls with bias and per-column requantization, dense and
  weight-sparse (CSR: a robust ticket's kept weights, N:M patterns);
* element-wise units: integer LayerNorm, i-GELU, residual add with requantization.

See docs/vit-hw.md.
"""

__all__: list[str] = []

# element-wise and normalization units (hw/vit/eltwise.py, hw/vit/layernorm.py)
from .eltwise import GeluUnit, GeluUnitConfig, ResidualAddUnit, ResidualAddUnitConfig  # noqa: E402
from .layernorm import LayerNormUnit, LayerNormUnitConfig  # noqa: E402

__all__ += ["GeluUnit", "GeluUnitConfig", "ResidualAddUnit", "ResidualAddUnitConfig", "LayerNormUnit",
            "LayerNormUnitConfig"]
