# Modified from li-jl16/LORS, bbox_heads/factorized_adaptive_mixing_operator.py
"""LORST: static low-rank residual structure for a stack of linear layers.

Paper (LORS, CVPR 2024, Sec. 3.2): N stacked layers share one weight and each
layer i adds a private low-rank residual made of K terms of rank r::

    W_i = W_shared + sum_{k=1..K} B_ik A_ik       B_ik: (out, r), A_ik: (r, in)
    y   = x W_i^T + b_i
        = x W_shared^T + sum_k (x A_ik^T) B_ik^T + b_i    (forward)

The K terms of layer i are stored side by side, ``private_B[i] = [B_i1 ..
B_iK]`` of shape (out, K*r) and ``private_A[i] = [A_i1; ..; A_iK]`` of shape
(K*r, in), so ``(x A_i^T) B_i^T`` is the sum over k in one product. Init as
in the paper and the official code: ``shared_weight`` as ``nn.Linear``
(Kaiming uniform), A Kaiming, **B zero**, bias zero: at init every layer
equals the shared layer.

Parameter names (stable, checkpoints depend on them): ``shared_weight``,
``private_A.{i}``, ``private_B.{i}``, ``private_bias.{i}``.
"""
import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_bool, check_positive, check_rank, per_layer
from .merge import MergeableStack


class LORSTLinear(MergeableStack):
    """N stacked linear layers sharing one weight plus private low-rank parts.

    Args:
        in_features (int): input size ``in``.
        out_features (int): output size ``out``.
        num_layers (int): number of stacked layers N (the decoder stages).
        rank (int | list[int]): rank r of each term, per layer or one value.
        num_factors (int | list[int]): number of low-rank terms K, per layer
            or one value.
        use_shared (bool): keep ``W_shared`` (False: private-only ablation).
        use_private (bool): keep the low-rank ``B A`` terms (False: every
            layer is the shared layer plus its own bias; shared-only ablation).
    """

    shared_param_names = ('shared_weight', )
    private_param_names = ('private_A', 'private_B', 'private_bias')

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 num_layers: int,
                 rank: Union[int, Sequence[int]] = 8,
                 num_factors: Union[int, Sequence[int]] = 1,
                 use_shared: bool = True,
                 use_private: bool = True):
        super().__init__()
        check_bool('use_shared', use_shared)
        check_bool('use_private', use_private)
        if not (use_shared or use_private):
            raise ValueError('LORSTLinear needs use_shared or use_private')
        self.in_features = check_positive('in_features', in_features)
        self.out_features = check_positive('out_features', out_features)
        self.num_layers = check_positive('num_layers', num_layers)
        self.ranks = per_layer('rank', rank, num_layers)
        self.num_factors = per_layer('num_factors', num_factors, num_layers)
        for i, r in enumerate(self.ranks):
            name = 'rank' if isinstance(rank, int) else f'rank[{i}]'
            check_rank(name, r, in_features, out_features)
        self.shared_weight = nn.Parameter(
            torch.empty(out_features, in_features)) if use_shared else None
        widths = [
            k * r if use_private else 0
            for k, r in zip(self.num_factors, self.ranks)
        ]
        self.private_A = nn.ParameterList(
            nn.Parameter(torch.empty(w, in_features)) for w in widths)
        self.private_B = nn.ParameterList(
            nn.Parameter(torch.empty(out_features, w)) for w in widths)
        self.private_bias = nn.ParameterList(
            nn.Parameter(torch.empty(out_features)) for _ in widths)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.shared_weight is not None:
            nn.init.kaiming_uniform_(self.shared_weight, a=math.sqrt(5))
        for A, B, b in zip(self.private_A, self.private_B, self.private_bias):
            # one call covers all K terms: the bound depends on fan_in only
            if A.numel():
                nn.init.kaiming_uniform_(A)
            nn.init.zeros_(B)
            nn.init.zeros_(b)

    def delta_weight(self, i: int) -> torch.Tensor:
        """Private part of layer i: ``sum_k B_ik A_ik``, shape (out, in)."""
        return self.private_B[i] @ self.private_A[i]

    def layer_weight(self, i: int) -> torch.Tensor:
        """Dense weight of layer i, ``W_shared + delta_weight(i)``."""
        if self.shared_weight is None:
            return self.delta_weight(i)
        return self.shared_weight + self.delta_weight(i)

    def dense_layer(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Layer i as (weight (out, in), bias (out))."""
        return self.layer_weight(i), self.private_bias[i]

    def forward(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer i = ``layer``: (..., in) -> (..., out),
        ``y = x W_shared^T + sum_k (x A_ik^T) B_ik^T + b_i``.

        Unmerged, the private part is applied in low-rank order: the dense
        (out, in) weight of the layer (and its gradient) is never formed.
        """
        if self.merged:  # one dense weight per layer (inference)
            return self.merged_linear(x, layer)
        A = self.private_A[layer]  # [A_i1; ..; A_iK]: (K*r, in)
        B = self.private_B[layer]  # [B_i1 .. B_iK]: (out, K*r)
        xa = F.linear(x, A)  # (..., K*r): x A_ik^T for every k
        y = F.linear(xa, B, self.private_bias[layer])  # (..., out): the
        # sum over k of (x A_ik^T) B_ik^T happens inside this product, + b_i
        if self.shared_weight is not None:  # None: private-only ablation
            y = y + F.linear(x, self.shared_weight)  # + x W_shared^T
        return y

    def extra_repr(self) -> str:
        return (f'in={self.in_features}, out={self.out_features}, '
                f'layers={self.num_layers}, rank={self.ranks}, '
                f'num_factors={self.num_factors}')
