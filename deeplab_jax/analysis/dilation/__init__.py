"""Dilation arithmetic: the analysis behind the notebooks in experiments/notebooks/.

Pure functions (numpy, plus JAX where a model is applied) for the questions DeepLabv3 raises
about atrous convolution (Chen et al. 2017, Sec. 3), one topic per module:

- `taps`: which taps of a 3x3 atrous filter land inside the feature map (Fig. 4);
- `receptive_field`: theoretical receptive fields and gridding (Sec. 3.2);
- `gradients`: effective receptive fields from input gradients of sown intermediates;
- `output_sizes`: the output-size arithmetic and aligned-corners upsampling.

Everything is also importable from here (`from deeplab_jax.analysis import dilation`).
Conventions: feature maps are [B, H, W, C]; offsets and positions are (row, column).
"""
from deeplab_jax.analysis.dilation.gradients import (centred_mass_side, input_gradient_map,
                                                     input_gradient_maps,
                                                     positive_constant_variables,
                                                     random_variables, sown, variable_shapes)
from deeplab_jax.analysis.dilation.output_sizes import (STAGES, aligned_corners_error,
                                                        conv_output_size, measured_stage_sizes,
                                                        padding_total, theoretical_stage_sizes)
from deeplab_jax.analysis.dilation.receptive_field import (count_holes, deeplab_layers,
                                                           gridding_mask, path_counts,
                                                           reachable_offsets, receptive_field)
from deeplab_jax.analysis.dilation.taps import (axis_tap_counts, effective_kernel_size,
                                                measured_tap_validity, tap_offsets,
                                                valid_tap_count_map, valid_tap_fractions,
                                                valid_tap_histogram)

__all__ = [
    "STAGES", "aligned_corners_error", "axis_tap_counts", "centred_mass_side",
    "conv_output_size", "count_holes", "deeplab_layers", "effective_kernel_size",
    "gridding_mask", "input_gradient_map", "input_gradient_maps", "measured_stage_sizes",
    "measured_tap_validity", "padding_total", "path_counts", "positive_constant_variables",
    "random_variables", "reachable_offsets", "receptive_field", "sown", "tap_offsets",
    "theoretical_stage_sizes", "valid_tap_count_map", "valid_tap_fractions",
    "valid_tap_histogram", "variable_shapes",
]
