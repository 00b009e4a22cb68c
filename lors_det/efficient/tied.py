"""Tied up/down projections: one matrix used as W and as W^T.

Koyun & Töreyin, "Do deep neural networks utilize the weight space
efficiently?": a feed-forward block reuses its up-projection's transpose as
its down-projection, halving its weights::

    FFN(x) = W^T act(W x + b1) + b2         W: (hidden, dim)

Biases stay separate (zero-initialised). Init: Xavier uniform on W; its bound
sqrt(6 / (hidden + dim)) is the same for W and W^T, so both uses start with
the scale an untied Xavier-initialised FFN (AdaMixer's init) would have.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..lors.checks import check_positive


class TiedFFN(nn.Module):
    """``W^T relu(W x + b1) + b2`` (no residual; the caller adds it).

    Args:
        dim (int): input and output size.
        hidden (int): hidden size.

    Parameters: ``weight`` (hidden, dim), ``bias1`` (hidden), ``bias2`` (dim).
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(
                check_positive('hidden', hidden), check_positive('dim', dim)))
        self.bias1 = nn.Parameter(torch.zeros(hidden))
        self.bias2 = nn.Parameter(torch.zeros(dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        hidden = F.relu(F.linear(x, self.weight, self.bias1), inplace=True)
        return F.linear(hidden, self.weight.t(), self.bias2)
