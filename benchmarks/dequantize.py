"""An int8 QDQ graph as the equivalent float graph (moved to hbscreen.training.dequantize, which
the segmentation's warm start also uses); kept here for the benchmarks' imports."""

from hbscreen.training.dequantize import dequantized, is_quantized

__all__ = ["dequantized", "is_quantized"]
