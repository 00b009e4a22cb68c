"""The one question the decoder asks about mixed precision (the mixing
keeps its products in float32 under autocast, the attention mask follows
autocast's dtype); LORST and LORSA need none: F.linear and matmul follow
autocast by themselves."""
from typing import Optional

import torch


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast runs matmuls in on ``device_type`` ('cpu' or
    'cuda'), or None when autocast is off there (then tensors keep their own
    dtype: a float64 model computes in float64)."""
    if device_type == 'cuda' and torch.is_autocast_enabled():
        return torch.get_autocast_gpu_dtype()
    if device_type == 'cpu' and torch.is_autocast_cpu_enabled():
        return torch.get_autocast_cpu_dtype()
    return None
