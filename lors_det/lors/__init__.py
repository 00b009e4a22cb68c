"""Framework-free building blocks for parameter-efficient layer stacks.

Plain PyTorch, usable outside mmdet: LORST (static) and LORSA (adaptive) low
rank residual structures, their unshared counterparts, tied W/W^T FFNs,
LoRITa over-parameterised linears with SVD truncation, parameter
accounting by declared shared/private names, and ``SharedLayers``: LORS over
the linears of any stack of identical layers.
"""
from .accounting import count_parameters, split_parameter_names
from .autocast import autocast_dtype
from .lorita import LoRITaLinear, rank_for_energy, svd_truncate
from .lorsa import LORSAGenerator, split_matrices
from .lorst import LORSTLinear
from .merge import MergeableStack
from .share import SharedLayers, share_layers
from .stacked import StackedGenerator, StackedLinear, make_linear
from .tied import TiedFFN

__all__ = [
    'LORSAGenerator', 'LORSTLinear', 'LoRITaLinear', 'MergeableStack',
    'SharedLayers', 'StackedGenerator',
    'StackedLinear', 'TiedFFN', 'autocast_dtype', 'count_parameters',
    'make_linear',
    'rank_for_energy', 'split_matrices', 'split_parameter_names',
    'share_layers', 'svd_truncate'
]
