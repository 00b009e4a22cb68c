"""Framework-free building blocks for parameter-efficient layer stacks.

Plain PyTorch, usable outside mmdet: LORST (static) and LORSA (adaptive) low
rank residual structures, their merge into dense weights, their unshared
counterparts (the AdaMixer baseline), parameter accounting by declared
shared/private names, and ``SharedLayers``: LORS over the linears of any
stack of identical layers. The other parameter-efficiency ideas (tied W/W^T,
LoRITa) live beside it in :mod:`lors_det.efficient`.
"""
from .accounting import count_parameters, split_parameter_names
from .autocast import autocast_dtype
from .lorsa import LORSAGenerator, split_matrices
from .lorst import LORSTLinear
from .merge import MergeableStack
from .share import SharedLayers, share_layers
from .stacked import StackedGenerator, StackedLinear, make_linear

__all__ = [
    'LORSAGenerator', 'LORSTLinear', 'MergeableStack', 'SharedLayers',
    'StackedGenerator', 'StackedLinear', 'autocast_dtype', 'count_parameters',
    'make_linear', 'split_matrices', 'split_parameter_names', 'share_layers'
]
