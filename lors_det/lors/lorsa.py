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
(J, G*K_i, r, r) with group-major, term-minor order.

:meth:`LORSAGenerator.forward` is the formula above, term by term. The
matrices are affine in q, so for inference :meth:`merge` folds every layer
into one dense generator (:meth:`dense_layer`), AdaMixer's per-stage
``Linear``; that is the fast inference path (``--merge-lors``).
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .checks import check_bool, check_positive, check_rank, per_layer
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

    def __init__(self,
                 query_dim: int,
                 matrix_shapes: Sequence[Tuple[int, int]],
                 num_groups: int,
                 num_layers: int,
                 rank: int = 16,
                 num_factors: Union[int, Sequence[int]] = 1,
                 use_shared: bool = True,
                 use_private: bool = True):
        super().__init__()
        check_bool('use_shared', use_shared)
        check_bool('use_private', use_private)
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
            query_dim, G *
            sum(m * n for m, n in self.matrix_shapes)) if use_shared else None
        self.private_generators = nn.ModuleList(
            nn.Linear(query_dim, J * G * k * r * r) for k in private_ks)
        self.left_factors = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.empty(G * k, m, r)) for k in private_ks)
            for m, _ in self.matrix_shapes)
        self.right_factors = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.empty(G * k, r, n)) for k in private_ks)
            for _, n in self.matrix_shapes)
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
        """``W_shared_j(q)``: (B, N, C) -> list over j of (B, N, G, m_j,
        n_j)."""
        return split_matrices(
            self.shared_generator(query), self.matrix_shapes, self.num_groups)

    def low_rank_terms(self, cores: torch.Tensor,
                       layer: int) -> List[torch.Tensor]:
        """``sum_k L_ijk Z_ijk R_ijk`` of layer i for given cores.

        Args:
            cores (Tensor): (..., J * G * K_i * r * r), the outputs of
                ``private_generators[layer]``: the cores Z_ijk.
            layer (int): stacked layer index i.

        Returns:
            list[Tensor]: per kind j, (..., G, m_j, n_j).
        """
        G, K, r = self.num_groups, self.num_factors[layer], self.rank
        J = len(self.matrix_shapes)
        Z = cores.unflatten(-1, (J, G, K, r, r))  # (..., J, G, K, r, r)
        out = []
        for j, (m, n) in enumerate(self.matrix_shapes):
            L = self.left_factors[j][layer].view(G, K, m, r)  # L_ijk
            R = self.right_factors[j][layer].view(G, K * r, n)  # [R_ij1; ..]
            LZ = L @ Z.select(-5, j)  # (..., G, K, m_j, r): L_ijk Z_ijk
            # [L_ij1 Z_ij1 .. L_ijK Z_ijK] (..., G, m_j, K*r) times
            # [R_ij1; ..; R_ijK]: the sum over k happens inside the product
            LZ = LZ.transpose(-3, -2).flatten(-2)
            out.append(LZ @ R)  # (..., G, m_j, n_j)
        return out

    def private_matrices(self, query: torch.Tensor,
                         layer: int) -> List[torch.Tensor]:
        """``sum_k L_ijk Z_ijk(q) R_ijk``: (B, N, C) -> list over j of
        (B, N, G, m_j, n_j)."""
        cores = self.private_generators[layer](query)  # Z_ijk(q), flat
        return self.low_rank_terms(cores, layer)

    def forward(self, query: torch.Tensor, layer: int) -> List[torch.Tensor]:
        """``W_ij(q) = W_shared_j(q) + sum_k L_ijk Z_ijk(q) R_ijk``.

        Args:
            query (Tensor): (B, N, C).
            layer (int): stacked layer (stage) index i.

        Returns:
            list[Tensor]: one (B, N, G, m_j, n_j) tensor per matrix kind j.
        """
        if self.merged:  # one dense generator per layer (inference)
            return split_matrices(
                self.merged_linear(query, layer), self.matrix_shapes,
                self.num_groups)
        if self.shared_generator is None:  # private-only ablation
            return self.private_matrices(query, layer)
        shared = self.shared_matrices(query)
        if self.num_factors[layer] == 0:  # shared-only ablation
            return shared
        return [
            s + p for s, p in zip(shared, self.private_matrices(query, layer))
        ]

    @torch.no_grad()
    def dense_layer(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Layer i as one dense generator ``Linear(C, G * sum_j m_j n_j)``:
        (weight (G * sum_j m_j n_j, C), bias (G * sum_j m_j n_j)), in the
        shared generator's output layout.

        The private matrices are linear in the cores, and the cores are
        ``W_z q + b_z``; so the columns of ``W_z`` (and ``b_z``) pushed
        through the low-rank terms as C + 1 pseudo-queries give the
        columns of the dense private weight (and its bias).
        """
        parts = []
        if self.shared_generator is not None:
            parts.append(
                (self.shared_generator.weight, self.shared_generator.bias))
        if self.num_factors[i]:
            gen = self.private_generators[i]
            cores = torch.cat([gen.weight.t(), gen.bias[None]])  # (C + 1, .)
            rows = torch.cat(
                [p.flatten(-2) for p in self.low_rank_terms(cores, i)],
                dim=-1).flatten(1)  # (C + 1, G * sum_j m_j n_j)
            parts.append((rows[:-1].t(), rows[-1]))
        weight = sum(w for w, _ in parts)
        bias = sum(b for _, b in parts)
        return weight, bias

    def extra_repr(self) -> str:
        return (f'query_dim={self.query_dim}, shapes={self.matrix_shapes}, '
                f'groups={self.num_groups}, layers={self.num_layers}, '
                f'rank={self.rank}, num_factors={self.num_factors}')
