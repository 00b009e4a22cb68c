# Modified from li-jl16/LORS, bbox_heads/factorized_adaptive_mixing_operator.py
"""LORSA: adaptive low-rank residual structure for query-generated matrices.

Paper (LORS, CVPR 2024, Sec. 3.2): a query q (C) generates, for every stacked
layer i, sampling group g and matrix kind j (an m_j x n_j matrix)::

    W_ij(q) = W_shared_j(q) + sum_{k=1..K_i} L_ijk  Z_ijk(q)  R_ijk
              (m_j x n_j)                 (m_j x r)(r x r)(r x n_j)

* ``shared_generator``: ONE ``Linear(C, G * sum_j m_j n_j)`` used by all
  layers, weight zero-initialised (AdaMixer's generator init), bias default.
* ``private_generators[i]``: ``Linear(C, J * G * K_i * r * r)`` producing the
  r x r cores Z of layer i, weight and bias zero-initialised.
* ``left_factors[j][i]`` (G*K_i, m_j, r) and ``right_factors[j][i]``
  (G*K_i, r, n_j): static per layer, Kaiming-initialised.

At init every Z is zero, so every layer generates exactly the shared matrices.
Output layouts follow the official code (so checkpoints convert by renaming):
the shared output is (G, sum_j m_j n_j) per query, the private one
(J, G*K_i, r, r) with group-major, factor-minor order.

The matrices are affine in q, so for inference :meth:`merge` folds every
layer into one dense generator (:meth:`dense_layer`), AdaMixer's per-stage
``Linear``.
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .autocast import autocast_dtype
from .checks import check_positive, check_rank, per_layer
from .merge import MergeableStack


def split_matrices(params: torch.Tensor, shapes: Sequence[Tuple[int, int]],
                   num_groups: int) -> List[torch.Tensor]:
    """Cut generator outputs into matrices, in AdaMixer's layout.

    Args:
        params (Tensor): (B, N, G * sum_j m_j n_j), group-major.
        shapes (list[tuple[int, int]]): (m_j, n_j) per matrix kind.
        num_groups (int): G.

    Returns:
        list[Tensor]: one (B, N, G, m_j, n_j) tensor per kind.
    """
    B, N, _ = params.shape
    params = params.view(B, N, num_groups, -1)
    sizes = [m * n for m, n in shapes]
    return [
        p.reshape(B, N, num_groups, m, n)
        for p, (m, n) in zip(params.split(sizes, dim=-1), shapes)
    ]


class LORSAGenerator(MergeableStack):
    """Per-query matrices of every stacked layer from shared + low-rank parts.

    Args:
        query_dim (int): C, size of the query that generates the matrices.
        matrix_shapes (list[tuple[int, int]]): (m_j, n_j) of each matrix kind
            generated per group, e.g. ``[(c, c), (P_out, P_in)]`` for
            AdaMixer's channel (ACM) and spatial (ASM) mixing.
        num_groups (int): G, sampling groups; one matrix per group and kind.
        num_layers (int): number of stacked layers N (decoder stages).
        rank (int): r, size of the generated cores Z.
        num_factors (int | list[int]): K_i, number of low-rank terms per layer.
        use_shared (bool): keep the shared generator (False: private-only
            ablation; the private generators then get ``nn.Linear``'s default
            init, since zero cores with no shared part would give all-zero
            matrices and no gradient through the ReLU after mixing).
        use_private (bool): keep the private low-rank terms (False: every
            layer generates the shared matrices; shared-only ablation).
    """

    shared_param_names = ('shared_generator', )
    private_param_names = ('private_generators', 'left_factors',
                           'right_factors')

    def __init__(self, query_dim: int, matrix_shapes: Sequence[Tuple[int,
                                                                     int]],
                 num_groups: int, num_layers: int, rank: int = 16,
                 num_factors: Union[int, Sequence[int]] = 1,
                 use_shared: bool = True, use_private: bool = True):
        super().__init__()
        if not (use_shared or use_private):
            raise ValueError('LORSAGenerator needs use_shared or use_private')
        self.query_dim = check_positive('query_dim', query_dim)
        self.num_groups = check_positive('num_groups', num_groups)
        self.num_layers = check_positive('num_layers', num_layers)
        self.matrix_shapes = [(check_positive('matrix rows', m),
                               check_positive('matrix cols', n))
                              for m, n in matrix_shapes]
        if not self.matrix_shapes:
            raise ValueError('matrix_shapes must name at least one matrix')
        for m, n in self.matrix_shapes:
            check_rank('rank', rank, m, n)
        self.rank = rank
        self.num_factors = per_layer('num_factors', num_factors, num_layers)
        if not use_private:
            self.num_factors = [0] * num_layers
        private_ks = self.num_factors if use_private else []
        G, J, r = num_groups, len(self.matrix_shapes), rank
        self.shared_generator = nn.Linear(
            query_dim, G * sum(m * n for m, n in self.matrix_shapes)
        ) if use_shared else None
        self.private_generators = nn.ModuleList(
            nn.Linear(query_dim, J * G * k * r * r) for k in private_ks)
        self.left_factors = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.empty(G * k, m, r))
                for k in private_ks) for m, _ in self.matrix_shapes)
        self.right_factors = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.empty(G * k, r, n))
                for k in private_ks) for _, n in self.matrix_shapes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.shared_generator is not None:
            self.shared_generator.reset_parameters()
            nn.init.zeros_(self.shared_generator.weight)
        for gen in self.private_generators:
            gen.reset_parameters()
            if self.shared_generator is not None:
                nn.init.zeros_(gen.weight)
                nn.init.zeros_(gen.bias)
        for factors in (*self.left_factors, *self.right_factors):
            for p in factors:
                nn.init.kaiming_uniform_(p)

    def shared_matrices(self, query: torch.Tensor) -> List[torch.Tensor]:
        """Shared part only: list of (B, N, G, m_j, n_j)."""
        return split_matrices(
            self.shared_generator(query), self.matrix_shapes, self.num_groups)

    def _low_rank_factors(
            self, cores: torch.Tensor,
            layer: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Factors of the private matrices of Q queries, per matrix kind.

        Args:
            cores (Tensor): (Q, J * G * K * r * r), private generator outputs.
            layer (int): stacked layer index i.

        Returns:
            list[tuple[Tensor, Tensor]]: per kind j, ``(LZ, R)`` with LZ
            (Q*G, m_j, K*r) and R (Q*G, K*r, n_j), so that ``LZ @ R`` is
            ``sum_k L_k Z_k R_k`` for every (query, group): the sum over k
            happens inside that product, no K-sized tensor is materialised.

        ``L_k Z_k`` of all queries is one GEMM per (group, k) with the
        static factor as the shared operand, computed transposed,
        ``Z_k^T L_k^T`` with the queries' ``Z^T`` stacked as rows: its
        output (G, K, Q, r, m) reaches the (Q, G, K, r, m) layout by moving
        contiguous (r, m) blocks, and LZ is the transposed view of that
        (BLAS reads it as is). Computing ``L Z`` directly gives (G, K, m,
        Q, r), whose rearrangement moves r-sized pieces: on CPU that copy
        alone cost as much as the product (docs/benchmarks.md).
        """
        Q = cores.shape[0]
        G, K, r = self.num_groups, self.num_factors[layer], self.rank
        cores = cores.view(Q, len(self.matrix_shapes), G, K, r, r)
        factors = []
        for j, (m, n) in enumerate(self.matrix_shapes):
            # (G*K, Q*r, r): Z^T of every query stacked as rows
            zt = cores[:, j].permute(1, 2, 0, 4, 3).reshape(G * K, Q * r, r)
            lzt = torch.bmm(zt, self.left_factors[j][layer].transpose(1, 2))
            # (G, K, Q, r, m) -> (Q*G, K*r, m), rows ordered (k, r)
            lzt = lzt.view(G, K, Q, r, m).permute(2, 0, 1, 3, 4).reshape(
                Q * G, K * r, m)
            right = self.right_factors[j][layer].view(1, G, K * r, n)
            right = right.expand(Q, -1, -1, -1).reshape(Q * G, K * r, n)
            factors.append((lzt.transpose(1, 2), right))
        return factors

    def private_matrices(self, query: torch.Tensor,
                         layer: int) -> List[torch.Tensor]:
        """Private part of ``layer``: list of (B, N, G, m_j, n_j)."""
        B, N, _ = query.shape
        cores = self.private_generators[layer](query.flatten(0, 1))
        return [
            torch.bmm(lz, right).view(B, N, self.num_groups, m, n)
            for (lz, right), (m, n) in zip(
                self._low_rank_factors(cores, layer), self.matrix_shapes)
        ]

    def forward(self, query: torch.Tensor, layer: int) -> List[torch.Tensor]:
        """Matrices of ``layer`` for every query.

        Args:
            query (Tensor): (B, N, C).
            layer (int): stacked layer (stage) index i.

        Returns:
            list[Tensor]: one (B, N, G, m_j, n_j) tensor per matrix kind.

        With autograd off (``torch.no_grad``, e.g. ``predict``) the
        shared and private parts are summed in place
        (:meth:`_inference_matrices`); same values, fewer passes over them.
        Traced graphs (ONNX export, ``get_flops.py``) take the out-of-place
        path: the TorchScript exporter does not keep in-place updates of
        views (the exported model computed wrong matrices).
        """
        if self.merged:
            return split_matrices(self.merged_linear(query, layer),
                                  self.matrix_shapes, self.num_groups)
        if self.shared_generator is None:
            return self.private_matrices(query, layer)
        if self.num_factors[layer] == 0:
            return self.shared_matrices(query)
        cores = self.private_generators[layer](query.flatten(0, 1))
        factors = self._low_rank_factors(cores, layer)
        if not (torch.is_grad_enabled() or torch.jit.is_tracing()):
            return self._inference_matrices(query, factors)
        # shared + LZ @ R in one baddbmm per kind (no separate private tensor)
        return [
            torch.baddbmm(s.flatten(0, 2), lz, right).view(s.shape)
            for s, (lz, right) in zip(self.shared_matrices(query), factors)
        ]

    def _inference_matrices(
            self, query: torch.Tensor,
            factors: List[Tuple[torch.Tensor,
                                torch.Tensor]]) -> List[torch.Tensor]:
        """:meth:`forward` without autograd, accumulating in place.

        Per kind, one buffer (Q, G, m_j n_j) receives the shared bias, then
        ``LZ @ R`` (``baddbmm_``), then the shared generator's GEMM of each
        group (``addmm_`` into a strided view, which BLAS writes as is). The
        autograd path instead copies the shared generator's output into
        ``baddbmm``'s fresh result, a full extra pass over the matrices;
        in-place updates of views would make its backward slower still.

        Args:
            query (Tensor): (B, N, C).
            factors (list[tuple[Tensor, Tensor]]): the layer's
                :meth:`_low_rank_factors` of these queries.

        Returns as :meth:`forward`; computes in autocast's dtype when it is
        on, else in the query's.
        """
        B, N, C = query.shape
        Q, G = B * N, self.num_groups
        dtype = autocast_dtype(query.device.type) or query.dtype
        weight = self.shared_generator.weight.to(dtype).view(G, -1, C)
        bias = self.shared_generator.bias.to(dtype).view(G, -1)
        q = query.reshape(Q, C).to(dtype)
        out, start = [], 0
        with torch.autocast(query.device.type, enabled=False):
            for (lz, right), (m, n) in zip(factors, self.matrix_shapes):
                end = start + m * n
                mats = bias[:, start:end].expand(Q, G, m * n).contiguous()
                mats.view(Q * G, m, n).baddbmm_(lz.to(dtype), right.to(dtype))
                for g in range(G):
                    mats[:, g].addmm_(q, weight[g, start:end].t())
                out.append(mats.view(B, N, G, m, n))
                start = end
        return out

    @torch.no_grad()
    def dense_layer(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Layer i as one dense generator ``Linear(C, G * sum_j m_j n_j)``:
        (weight (G * sum_j m_j n_j, C), bias (G * sum_j m_j n_j)), in the
        shared generator's output layout.

        The private matrices are linear in the cores, and the cores are
        ``W_z q + b_z``; so the columns of ``W_z`` (and ``b_z``) pushed
        through the low-rank product as C + 1 pseudo-queries give the
        columns of the dense private weight (and its bias).
        """
        parts = []
        if self.shared_generator is not None:
            parts.append((self.shared_generator.weight,
                          self.shared_generator.bias))
        if self.num_factors[i]:
            gen = self.private_generators[i]
            cores = torch.cat([gen.weight.t(), gen.bias[None]])
            rows = torch.cat([
                torch.bmm(lz, right).view(len(cores), self.num_groups, -1)
                for lz, right in self._low_rank_factors(cores, i)
            ], dim=-1).flatten(1)  # (C + 1, G * sum_j m_j n_j)
            parts.append((rows[:-1].t(), rows[-1]))
        weight = sum(w for w, _ in parts)
        bias = sum(b for _, b in parts)
        return weight, bias

    def extra_repr(self) -> str:
        return (f'query_dim={self.query_dim}, shapes={self.matrix_shapes}, '
                f'groups={self.num_groups}, layers={self.num_layers}, '
                f'rank={self.rank}, num_factors={self.num_factors}')
