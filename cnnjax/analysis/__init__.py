"""Shapes, parameters, FLOPs, memory and receptive fields of layers and models."""

from cnnjax.analysis.receptive_field import (LayerGeometry, ReceptiveField,
                                             receptive_field_size,
                                             receptive_fields)
from cnnjax.analysis.shapes import (conv_flops, conv_output_shape,
                                    conv_output_size, conv_parameters,
                                    effective_kernel_size, same_padding,
                                    stacked_versus_single)
from cnnjax.analysis.summary import (LayerRow, ModelSummary, format_summary,
                                     summarize)

__all__ = [
    "LayerGeometry", "LayerRow", "ModelSummary", "ReceptiveField",
    "conv_flops", "conv_output_shape", "conv_output_size", "conv_parameters",
    "effective_kernel_size", "format_summary", "receptive_field_size",
    "receptive_fields", "same_padding", "stacked_versus_single", "summarize",
]
