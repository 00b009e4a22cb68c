from .adaptive_mixing import AdaptiveMixing, mix
from .ffn import FFN
from .sampling_3d import (AdaptiveSampling, level_weights, make_sample_points,
                          sample_3d)
from .xyzr import position_embedding, refine_xyzr, xyxy_to_xyzr, xyzr_to_xyxy

__all__ = [
    'AdaptiveMixing', 'AdaptiveSampling', 'FFN', 'level_weights', 'mix',
    'make_sample_points', 'position_embedding', 'refine_xyzr', 'sample_3d',
    'xyxy_to_xyzr', 'xyzr_to_xyxy'
]
