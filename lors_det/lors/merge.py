"""Folding a LORS stack into dense per-layer weights (inference only).

Both LORS structures are affine per layer once trained: LORST's layer i is
``W_shared + B_i A_i``, and LORSA's matrices are a linear map of the query
(the cores ``Z = W_z q + b_z`` are, and ``L Z R`` is linear in ``Z``). So
every layer folds into one dense ``Linear`` (weight (out, in), bias (out)),
which is exactly what the unshared AdaMixer stack holds.
"""
from abc import ABCMeta, abstractmethod
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class MergeableStack(nn.Module, metaclass=ABCMeta):
    """A stack of ``num_layers`` layers that :meth:`merge` folds into dense
    per-layer weights (``merged_weight`` (N, out, in), ``merged_bias``
    (N, out)); subclasses define :meth:`dense_layer` and use the merged
    buffers in ``forward`` when :attr:`merged` (:meth:`merged_linear`).

    The parameters are untouched by merging, :meth:`unmerge` restores the
    LORS computation, and loading a state dict unmerges (the merged weights
    of the old parameters would be stale). A merged stack refuses to run in
    training mode: training would update the parameters, not the merged
    copy.
    """

    num_layers: int

    def __init__(self):
        super().__init__()
        # buffers so that .to() moves them; not saved with the checkpoint
        self.register_buffer('merged_weight', None, persistent=False)
        self.register_buffer('merged_bias', None, persistent=False)

    @abstractmethod
    def dense_layer(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Layer i as (weight (out, in), bias (out))."""

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every layer into dense weights (same outputs, fewer ops)."""
        weights, biases = zip(*(self.dense_layer(i)
                                for i in range(self.num_layers)))
        weight, bias = torch.stack(weights), torch.stack(biases)
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError(f'{type(self).__name__}.merge: merged weights '
                             'are not finite; the checkpoint is broken')
        self.merged_weight, self.merged_bias = weight, bias

    def unmerge(self) -> None:
        """Drop the dense weights made by :meth:`merge`."""
        self.merged_weight = self.merged_bias = None

    @property
    def merged(self) -> bool:
        return self.merged_weight is not None

    def merged_linear(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Layer i with the merged weights: (..., in) -> (..., out)."""
        if self.training:
            raise RuntimeError(
                f'{type(self).__name__} is merged: its dense weights are an '
                'inference copy that training would leave stale; call '
                'unmerge() before training')
        return F.linear(x, self.merged_weight[i], self.merged_bias[i])

    @torch.no_grad()
    def dense_state_dict(self) -> Dict[str, torch.Tensor]:
        """Per-layer dense weights in the unshared stacks' layout
        (``layers.{i}.weight`` (out, in), ``layers.{i}.bias`` (out)), for a
        deployment model without LORS."""
        state = {}
        for i in range(self.num_layers):
            weight, bias = self.dense_layer(i)
            state[f'layers.{i}.weight'] = weight.clone()
            state[f'layers.{i}.bias'] = bias.clone()
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        self.unmerge()
        super()._load_from_state_dict(*args, **kwargs)
