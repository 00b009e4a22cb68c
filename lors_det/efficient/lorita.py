"""LoRITa: low-rank induced training by linear over-parameterisation.

LoRITa, arXiv 2405.03089 ("Promoting Low-Rank Neural Network Compression
Through Overparameterized Training"): a linear layer ``y = W x + b`` is
trained as a product of N linear maps with no non-linearity in between and
the bias only on the last one::

    y = W_N ( ... W_2 (W_1 x)) + b    W_1: (d, in), W_k: (d, d), W_N: (out, d)

with d = min(in, out) so the product can reach full rank. Weight decay on the
factors penalises the product's Schatten-2/N quasi-norm, which favours low
rank. After training, :meth:`LoRITaLinear.fold` multiplies the factors out
(exact) and :func:`svd_truncate` keeps the top singular directions, stored as
a 2-factor LoRITaLinear with inner size ``rank``: a compressed checkpoint
loads into the same module (its factor shapes are read from the checkpoint).

Init: factors 1..N-1 orthogonal (norm preserving) and the last one uniform
with the variance that gives the product the variance of a Xavier-uniform
(out, in) weight, i.e. of the plain linear it replaces in AdaMixer's decoder
stage; the bias as ``nn.Linear``'s default.

A compressed checkpoint is for evaluation and deployment: mmengine builds
the optimizer before it loads ``load_from``, so fine-tuning from one would
not update the replaced factors. To fine-tune at rank r, train a config with
``lorita=dict(num_factors=2, rank=r)`` from it instead.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..lors.checks import check_positive, check_rank


class LoRITaLinear(nn.Module):
    """A linear layer trained as a product of ``num_factors`` linear maps.

    Args:
        in_features (int): input size.
        out_features (int): output size.
        num_factors (int): N >= 1 (1 is a plain linear layer).
        rank (int, optional): inner size d; default ``min(in, out)``.

    Parameters: ``factors.{k}`` (k = 0 is applied first) and ``bias``.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 num_factors: int = 2,
                 rank: Optional[int] = None):
        super().__init__()
        check_positive('num_factors', num_factors)
        self.in_features = check_positive('in_features', in_features)
        self.out_features = check_positive('out_features', out_features)
        d = min(in_features, out_features) if rank is None else check_rank(
            'rank', rank, in_features, out_features)
        dims = [in_features] + [d] * (num_factors - 1) + [out_features]
        self.factors = nn.ParameterList(
            nn.Parameter(torch.empty(dims[k + 1], dims[k]))
            for k in range(num_factors))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for w in list(self.factors)[:-1]:
            nn.init.orthogonal_(w)
        last = self.factors[-1]  # (out, d)
        fan_in, fan_out, d = self.in_features, self.out_features, last.size(1)
        # the first factors map x (in) isometrically to d dims, so the
        # product's variance is d * var(last) / in; match Xavier's 2/(in+out)
        bound = math.sqrt(3.0 * 2.0 * fan_in / (d * (fan_in + fan_out)))
        nn.init.uniform_(last, -bound, bound)
        bound = 1 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def num_factors(self) -> int:
        return len(self.factors)

    def fold(self) -> torch.Tensor:
        """The product ``W_N ... W_1``, shape (out, in); exact."""
        weight = self.factors[0]
        for w in list(self.factors)[1:]:
            weight = w @ weight
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        for w in list(self.factors)[:-1]:
            x = F.linear(x, w)
        return F.linear(x, self.factors[-1], self.bias)

    @torch.no_grad()
    def compress(self, rank: int) -> None:
        """Replace the factors by the rank-``rank`` SVD truncation of the
        product (2 factors, ``rank * (in + out)`` weights)."""
        left, right = svd_truncate(self.fold(), rank)
        self.factors = nn.ParameterList(
            [nn.Parameter(right), nn.Parameter(left)])

    def is_valid_chain(self, shapes) -> bool:
        """Whether factor ``shapes`` (applied first to last) map
        ``in_features`` to ``out_features``: ``(d_1, in), (d_2, d_1), ...,
        (out, d_{N-1})``."""
        shapes = [tuple(s) for s in shapes]
        return (len(shapes) > 0 and all(len(s) == 2 for s in shapes)
                and shapes[0][1] == self.in_features
                and shapes[-1][0] == self.out_features
                and all(shapes[k + 1][1] == shapes[k][0]
                        for k in range(len(shapes) - 1)))

    def adopt_factor_shapes(self, shapes) -> bool:
        """Re-create the factors (uninitialised, same device and dtype) with
        ``shapes`` if they differ from the current ones and form a valid
        chain (:meth:`is_valid_chain`); returns whether they changed."""
        shapes = [tuple(s) for s in shapes]
        if shapes == [tuple(w.shape) for w in self.factors] or \
                not self.is_valid_chain(shapes):
            return False
        ref = self.bias
        self.factors = nn.ParameterList(
            nn.Parameter(torch.empty(s, device=ref.device, dtype=ref.dtype))
            for s in shapes)
        return True

    def _checkpoint_factor_shapes(self, state_dict, prefix):
        """The shapes of ``factors.0 .. factors.{n-1}`` in ``state_dict``
        (None without them, or with a gap in the numbering)."""
        head = prefix + 'factors.'
        index = {
            int(k[len(head):]): k
            for k in state_dict
            if k.startswith(head) and k[len(head):].isdigit()
        }
        if not index or sorted(index) != list(range(len(index))):
            return None
        return [tuple(state_dict[index[i]].shape) for i in range(len(index))]

    def state_entries_after_load(self, state_dict, prefix):
        """``{key: (shape, dtype)}`` of this layer's state once
        ``state_dict`` is loaded (the adopted factor shapes, see
        ``_load_from_state_dict``), without loading: lets a checkpoint be
        checked against the model without copying it. None: unchanged."""
        shapes = self._checkpoint_factor_shapes(state_dict, prefix)
        if shapes is None or not self.is_valid_chain(shapes):
            return None
        dtype = self.bias.dtype
        entries = {
            f'{prefix}factors.{i}': (torch.Size(s), dtype)
            for i, s in enumerate(shapes)
        }
        entries[prefix + 'bias'] = (self.bias.shape, dtype)
        return entries

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A compressed checkpoint has fewer/smaller factors: adopt its shapes.
        # Only shapes that chain from in_features to out_features (and keys
        # factors.0 .. factors.{n-1}) are adopted; anything else (e.g. a
        # checkpoint of a layer of another size) is left to the usual
        # size-mismatch / missing / unexpected key errors instead of being
        # adopted silently and failing at the first forward.
        shapes = self._checkpoint_factor_shapes(state_dict, prefix)
        if shapes is not None:
            self.adopt_factor_shapes(shapes)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        shapes = [tuple(w.shape) for w in self.factors]
        return f'in={self.in_features}, out={self.out_features}, ' \
               f'factors={shapes}'


def svd_truncate(weight: torch.Tensor,
                 rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factorisation ``weight ~ left @ right``.

    Args:
        weight (Tensor): (out, in).
        rank (int): 0 < rank <= min(out, in).

    Returns:
        tuple[Tensor, Tensor]: left (out, rank) = U_r diag(s_r), right
        (rank, in) = V_r^T.
    """
    check_rank('rank', rank, *weight.shape)
    U, s, Vh = torch.linalg.svd(weight.double(), full_matrices=False)
    left = (U[:, :rank] * s[:rank]).to(weight.dtype)
    return left, Vh[:rank].to(weight.dtype)


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank keeping ``energy`` (0, 1] of sum(s**2)."""
    if not 0 < energy <= 1:
        raise ValueError(f'energy must be in (0, 1], got {energy}')
    cum = singular_values.double().pow(2).cumsum(0)
    kept = cum / cum[-1]
    return int((kept < energy - 1e-12).sum().item()) + 1
