"""AdaMixer's neck: map every backbone level to C channels, no FPN fusion.

Modified from the official ``ChannelMapping``
(https://github.com/MCG-NJU/AdaMixer), re-written for mmdet 3.x.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule


@MODELS.register_module()
class ChannelMapping(BaseModule):
    """A 1x1 conv (with bias) per level, then ONE GroupNorm(32, C) shared by
    all levels.

    Args:
        in_channels (list[int]): channels of each backbone level.
        out_channels (int): C.
        num_groups (int): groups of the shared GroupNorm (32).

    Parameters: ``lateral_convs.{l}.conv.{weight,bias}``, ``gn_out``.
    Convs are Xavier-uniform initialised (official ``init_cfg``).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int = 256,
                 num_groups: int = 32,
                 init_cfg: dict = dict(
                     type='Xavier', layer='Conv2d', distribution='uniform')):
        super().__init__(init_cfg)
        if out_channels % num_groups:
            raise ValueError(f'GroupNorm groups={num_groups} must divide '
                             f'out_channels={out_channels}')
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, act_cfg=None, inplace=False)
            for c in in_channels)
        self.gn_out = nn.GroupNorm(num_groups, out_channels)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        """L maps (B, C_l, H_l, W_l) -> L maps (B, C, H_l, W_l)."""
        if len(inputs) != len(self.lateral_convs):
            raise ValueError(f'ChannelMapping got {len(inputs)} feature maps '
                             f'but in_channels has {len(self.lateral_convs)}')
        outs: List[torch.Tensor] = [
            self.gn_out(conv(x)) for conv, x in zip(self.lateral_convs, inputs)
        ]
        return tuple(outs)
