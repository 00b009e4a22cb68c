"""The decoder stage's feed-forward block, plain, tied or LoRITa."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...efficient import TiedFFN
from ...lors import make_linear
from ...lors.checks import check_bool


class FFN(nn.Module):
    """``x + fc2(relu(fc1(x)))`` (AdaMixer's FFN, dropout 0).

    Args:
        embed_dims (int): C.
        feedforward_channels (int): hidden size (2048 in AdaMixer).
        tied (bool): share one matrix as fc1 and fc2^T (Koyun & Töreyin,
            "Do deep neural networks utilize the weight space
            efficiently?"); the parameters are then ``tied.weight``,
            ``tied.bias1/2``.
        lorita (dict, optional): train fc1 and fc2 as LoRITa products
            (arXiv 2405.03089), e.g. ``dict(num_factors=3)``.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 feedforward_channels: int = 2048,
                 tied: bool = False,
                 lorita: Optional[dict] = None):
        super().__init__()
        check_bool('tied', tied)
        if tied and lorita is not None:
            raise ValueError('FFN: choose tied=True or lorita, not both')
        if tied:
            self.tied = TiedFFN(embed_dims, feedforward_channels)
        else:
            self.fc1 = make_linear(embed_dims, feedforward_channels, lorita)
            self.fc2 = make_linear(feedforward_channels, embed_dims, lorita)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        if hasattr(self, 'tied'):
            return x + self.tied(x)
        return x + self.fc2(F.relu(self.fc1(x), inplace=True))
