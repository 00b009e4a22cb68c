"""Unshared stacks: every layer owns its full weights (the AdaMixer baseline).

Same call interface as :class:`~.lorst.LORSTLinear` and
:class:`~.lorsa.LORSAGenerator` (``module(x, layer)``), so a decoder switches
between plain stacking and LORS by config alone.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..efficient.lorita import LoRITaLinear
from .checks import check_keys, check_positive
from .lorsa import split_matrices


def make_linear(in_features: int,
                out_features: int,
                lorita: Optional[dict] = None) -> nn.Module:
    """``nn.Linear`` with AdaMixer's init (Xavier-uniform weight, default
    bias), or a :class:`~.lorita.LoRITaLinear` when ``lorita`` is given."""
    if lorita is not None:
        return LoRITaLinear(
            in_features, out_features,
            **check_keys('lorita', lorita, ('num_factors', 'rank')))
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class StackedLinear(nn.Module):
    """N independent ``nn.Linear(in, out)``; ``layers.{i}`` is layer i.

    Init as in AdaMixer's decoder stage: Xavier-uniform weight, default bias.
    With ``lorita=dict(num_factors=N)`` every layer is a
    :class:`~.lorita.LoRITaLinear` instead (its own init).
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 num_layers: int,
                 lorita: Optional[dict] = None):
        super().__init__()
        check_positive('num_layers', num_layers)
        self.layers = nn.ModuleList(
            make_linear(in_features, out_features, lorita)
            for _ in range(num_layers))

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """(..., in) -> (..., out) with layer ``layer``'s weights."""
        return self.layers[layer](x)


class StackedGenerator(nn.Module):
    """N independent query-to-matrices generators (AdaMixer's mixing params).

    Layer i is ``layers.{i} = Linear(C, G * sum_j m_j n_j)`` with zero weight
    and default bias, as in the official ``AdaptiveMixing``.
    """

    def __init__(self, query_dim: int, matrix_shapes: Sequence[Tuple[int,
                                                                     int]],
                 num_groups: int, num_layers: int):
        super().__init__()
        check_positive('num_layers', num_layers)
        self.matrix_shapes = list(matrix_shapes)
        self.num_groups = check_positive('num_groups', num_groups)
        out = num_groups * sum(m * n for m, n in self.matrix_shapes)
        self.layers = nn.ModuleList(
            nn.Linear(query_dim, out) for _ in range(num_layers))
        for layer in self.layers:
            nn.init.zeros_(layer.weight)

    def forward(self, query: torch.Tensor, layer: int) -> List[torch.Tensor]:
        """(B, N, C) -> list of (B, N, G, m_j, n_j)."""
        return split_matrices(self.layers[layer](query), self.matrix_shapes,
                              self.num_groups)
