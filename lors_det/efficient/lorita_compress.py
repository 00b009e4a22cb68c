"""Post-training compression of LoRITa layers (LoRITa, arXiv 2405.03089).

A model trained with :class:`~lors_det.efficient.LoRITaLinear` layers (products
of N linear maps) is compressed by multiplying every product out
(:meth:`LoRITaLinear.fold`, exact) and keeping the top singular directions
(:meth:`LoRITaLinear.compress`, SVD truncation stored as two factors
``(rank, in)`` and ``(out, rank)``). The rank of each layer is chosen by one
of three methods:

``rank``
    the same rank R for every layer, clamped to the layer's largest possible
    rank (``min(in, out)``, or the inner size of an already compressed layer;
    the clamping is reported).
``energy``
    per layer, the smallest rank keeping the fraction E of the sum of squared
    singular values (:func:`~lors_det.efficient.rank_for_energy`).
``ratio``
    a GLOBAL budget: keep the fraction P of all singular values of all
    LoRITa layers, ranked together by their magnitude *relative to the
    largest singular value of their own layer* (see below).

Global budget (``ratio``) -- what LoRITa's code does and what we do
---------------------------------------------------------------------
The official code (github.com/XitongSystem/LoRITa,
``Compress_Code/utility/compress.py``, ``layer_decompose_cnn`` /
``layer_decompose_vit`` / ``layer_decompose_fcn``) takes the SVD of every
(already multiplied out) weight, divides each layer's singular values by that
layer's largest one (``S / torch.max(S)``), concatenates them over the layers
of one kind, sorts them and zeroes the globally smallest ``int(n * ratio)``
of them, sweeping ``ratio`` (the fraction REMOVED) from 1% to 99% and
evaluating each. Details of that code we note but do not copy:

* it pools conv layers and linear layers separately (ViT: attention and
  MLP weights separately); here all LoRITa layers form one pool (one
  budget for the model);
* for the linear pools it builds the normalised list but then concatenates
  the raw singular values (``SLr = torch.cat(SL)``), so those layers are in
  effect ranked by raw magnitude -- we take this for an oversight and
  normalise every layer, as its conv path (and the paper's description of a
  scale-free global threshold) does;
* ``layer_decompose_cnn`` can remove all singular values of a layer; the
  ``*_iterative`` variant keeps at least ``rank_threshold = 2``. We keep at
  least rank 1 per layer (a rank-0 layer would be a constant).

Here ``P`` is the fraction KEPT: ``ceil(P * n)`` of the ``n`` singular values
(``n = sum`` of the layers' largest possible ranks) with the largest
normalised values are kept (ties broken by layer order, then position), so
the kept set is a prefix of every layer's spectrum and each layer's rank is
the size of that prefix. Because every layer's largest normalised value is
exactly 1, every layer gets at least rank 1 by itself whenever
``ceil(P * n) >=`` the number of layers; below that the minimum of one per
layer is enforced and the kept total exceeds the budget (reported).

Checkpoints: :func:`lors_det.engine.convert.compress_checkpoint` writes
``dict(meta=..., state_dict=...)``; a compressed layer's factors have the
compressed shapes,
and ``LoRITaLinear._load_from_state_dict`` adopts them, so the SAME config
loads it (``tools/test.py CONFIG OUT``, or ``load_state_dict(strict=True)``).
"""
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .lorita import LoRITaLinear, rank_for_energy

METHODS = ('rank', 'energy', 'ratio')


class LoRITaCompressError(ValueError):
    """A user-facing error of the compression (bad value, bad input)."""


# ---------------------------------------------------------------------------
# layers and counts
# ---------------------------------------------------------------------------
def find_lorita_layers(model: nn.Module) -> 'OrderedDict[str, LoRITaLinear]':
    """All :class:`LoRITaLinear` modules of ``model`` by name (model order).

    Raises:
        LoRITaCompressError: if there is none.
    """
    layers = OrderedDict((name, m) for name, m in model.named_modules()
                         if isinstance(m, LoRITaLinear))
    if not layers:
        raise LoRITaCompressError(
            'the model has no LoRITaLinear layers, nothing to compress; '
            'use a config that trains with LoRITa, e.g. '
            'model.decoder.stage.ffn.lorita=dict(num_factors=3) and/or '
            'model.decoder.mixing.out_proj_lorita=dict(num_factors=3) '
            '(configs/lorita/, configs/synthetic/adamixer-lorita_tiny_'
            'synthetic.py)')
    return layers


def layer_params(layer: LoRITaLinear) -> int:
    """Parameters of one LoRITa layer (factors and bias)."""
    return sum(p.numel() for p in layer.parameters())


def max_rank(layer: LoRITaLinear) -> int:
    """The largest rank the layer's product can have: ``min(in, out)`` and
    every inner size (smaller for an already compressed layer)."""
    return min(min(w.shape) for w in layer.factors)


def compressed_params(layer: LoRITaLinear, rank: int) -> int:
    """Parameters after :meth:`LoRITaLinear.compress` to ``rank``."""
    return rank * (layer.in_features + layer.out_features) + \
        layer.bias.numel()


def dense_params(layer: LoRITaLinear) -> int:
    """Parameters of a plain ``nn.Linear`` of the same size (reference)."""
    return layer.in_features * layer.out_features + layer.bias.numel()


def model_params(model: nn.Module) -> int:
    """All parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def singular_values(layer: LoRITaLinear) -> torch.Tensor:
    """Singular values (float64, descending) of the folded product, cut to
    :func:`max_rank` (beyond it they are zero up to round-off)."""
    s = torch.linalg.svdvals(layer.fold().detach().double().cpu())
    return s[:max_rank(layer)]


# ---------------------------------------------------------------------------
# rank selection (pure)
# ---------------------------------------------------------------------------
def check_value(method: str, value) -> Union[int, float]:
    """Validate ``value`` for ``method``; return it (int for ``rank``)."""
    if method not in METHODS:
        raise LoRITaCompressError(
            f'unknown method {method!r}; expected one of {METHODS}')
    if method == 'rank':
        if isinstance(value, bool) or not isinstance(value, int) \
                or value <= 0:
            raise LoRITaCompressError(
                f'--rank must be a positive integer, got {value!r}')
        return value
    name = f'--{method}'
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LoRITaCompressError(
            f'{name} must be a number in (0, 1], got {value!r}') from None
    if not (0.0 < v <= 1.0):  # also rejects nan
        what = ('fraction of the squared singular values kept per layer'
                if method == 'energy' else
                'fraction of all singular values kept (global budget)')
        raise LoRITaCompressError(
            f'{name} must be in (0, 1] (the {what}), got {value!r}')
    return v


def ranks_for_fixed_rank(max_ranks: Sequence[int],
                         rank: int) -> Tuple[List[int], List[bool]]:
    """``rank`` for every layer, clamped to its max rank.

    Returns:
        tuple: ranks and, per layer, whether it was clamped.
    """
    rank = check_value('rank', rank)
    ranks = [min(rank, m) for m in max_ranks]
    return ranks, [rank > m for m in max_ranks]


def ranks_for_energy(svals: Sequence[torch.Tensor],
                     energy: float) -> List[int]:
    """Per layer, the smallest rank keeping ``energy`` of sum(s**2)."""
    energy = check_value('energy', energy)
    return [rank_for_energy(s, energy) for s in svals]


def ranks_for_global_ratio(svals: Sequence[torch.Tensor],
                           ratio: float) -> List[int]:
    """Global budget: keep ``ceil(ratio * n)`` of all ``n`` singular values,
    the largest relative to their own layer's largest one; at least rank 1
    per layer (see the module docstring).

    Args:
        svals: per layer, singular values in descending order.
        ratio: fraction kept, in (0, 1].
    """
    ratio = check_value('ratio', ratio)
    n = sum(len(s) for s in svals)
    keep = min(n, math.ceil(ratio * n - 1e-9))
    entries = []  # (-normalised value, layer, position)
    for i, s in enumerate(svals):
        s = s.double()
        top = float(s[0]) if len(s) else 0.0
        normed = (s / top).tolist() if top > 0 else [0.0] * len(s)
        entries += [(-v, i, j) for j, v in enumerate(normed)]
    entries.sort()
    ranks = [0] * len(svals)
    for _, i, _ in entries[:keep]:
        ranks[i] += 1
    return [max(r, 1) for r in ranks]


def energy_kept(s: torch.Tensor, rank: int) -> float:
    """Fraction of sum(s**2) in the top ``rank`` singular values."""
    sq = s.double().pow(2)
    total = float(sq.sum())
    return float(sq[:rank].sum()) / total if total > 0 else 1.0


# ---------------------------------------------------------------------------
# compressing a model
# ---------------------------------------------------------------------------
@dataclass
class LayerRow:
    name: str
    in_features: int
    out_features: int
    num_factors: int
    max_rank: int
    rank: int
    params_before: int
    params_after: int
    dense_params: int
    energy_kept: float
    clamped: bool = False


@dataclass
class CompressionReport:
    method: str
    value: Union[int, float]
    layers: List[LayerRow]
    model_params_before: int
    model_params_after: int
    notes: List[str] = field(default_factory=list)

    @property
    def lorita_params_before(self) -> int:
        return sum(r.params_before for r in self.layers)

    @property
    def lorita_params_after(self) -> int:
        return sum(r.params_after for r in self.layers)

    @property
    def ranks(self) -> 'OrderedDict[str, int]':
        return OrderedDict((r.name, r.rank) for r in self.layers)

    @property
    def singular_values_kept(self) -> Tuple[int, int]:
        """(kept, total) singular values over all LoRITa layers."""
        return (sum(r.rank for r in self.layers),
                sum(r.max_rank for r in self.layers))

    def to_meta(self) -> dict:
        """What :func:`compress_checkpoint` stores in ``meta``."""
        kept, total = self.singular_values_kept
        return dict(
            method=self.method,
            value=self.value,
            ranks=dict(self.ranks),
            layers=[asdict(r) for r in self.layers],
            singular_values_kept=kept,
            singular_values_total=total,
            lorita_params_before=self.lorita_params_before,
            lorita_params_after=self.lorita_params_after,
            model_params_before=self.model_params_before,
            model_params_after=self.model_params_after,
            notes=list(self.notes))


def choose_ranks(
        layers: 'OrderedDict[str, LoRITaLinear]', method: str,
        value) -> Tuple[List[int], List[bool], List[str], List[torch.Tensor]]:
    """Ranks for ``layers`` by ``method`` (:data:`METHODS`).

    Returns:
        tuple: ranks, clamped flags, notes, singular values per layer.
    """
    value = check_value(method, value)
    svals = [singular_values(m) for m in layers.values()]
    maxr = [max_rank(m) for m in layers.values()]
    notes, clamped = [], [False] * len(maxr)
    if method == 'rank':
        ranks, clamped = ranks_for_fixed_rank(maxr, value)
        for (name, m), c, r in zip(layers.items(), clamped, ranks):
            if c:
                notes.append(
                    f'--rank {value} > max rank {r} of {name} '
                    f'(in={m.in_features}, out={m.out_features}, factors '
                    f'{[tuple(w.shape) for w in m.factors]}): clamped to {r}')
    elif method == 'energy':
        ranks = ranks_for_energy(svals, value)
    else:
        ranks = ranks_for_global_ratio(svals, value)
        kept, total = sum(ranks), sum(maxr)
        budget = min(total, math.ceil(value * total - 1e-9))
        notes.append(f'global budget: keep {budget} of {total} singular '
                     f'values (ratio {value}), ranked by s / s_max of their '
                     f'layer; kept {kept}')
        if kept > budget:
            notes.append(f'the minimum of rank 1 per layer keeps {kept} > '
                         f'budget {budget}')
    return ranks, clamped, notes, svals


@torch.no_grad()
def compress_model(model: nn.Module, method: str, value) -> CompressionReport:
    """Fold and SVD-truncate every LoRITa layer of ``model`` in place.

    Args:
        model: a model holding :class:`LoRITaLinear` layers.
        method: ``'rank'``, ``'energy'`` or ``'ratio'``.
        value: R (int), E or P (in (0, 1]).

    Returns:
        CompressionReport: per-layer rows and totals.
    """
    layers = find_lorita_layers(model)
    value = check_value(method, value)
    before = model_params(model)
    ranks, clamped, notes, svals = choose_ranks(layers, method, value)
    rows = []
    for (name, layer), rank, c, s in zip(layers.items(), ranks, clamped,
                                         svals):
        row = LayerRow(
            name=name,
            in_features=layer.in_features,
            out_features=layer.out_features,
            num_factors=layer.num_factors,
            max_rank=max_rank(layer),
            rank=int(rank),
            params_before=layer_params(layer),
            params_after=compressed_params(layer, rank),
            dense_params=dense_params(layer),
            energy_kept=energy_kept(s, rank),
            clamped=c)
        layer.compress(int(rank))
        assert layer_params(layer) == row.params_after, name
        rows.append(row)
    larger = [r.name for r in rows if r.params_after > r.dense_params]
    if larger:
        notes.append(
            f'{len(larger)} layer(s) keep a rank r with r * (in + out) > '
            f'in * out, i.e. more weights than a dense layer: '
            f'{", ".join(larger)}')
    return CompressionReport(method, value, rows, before, model_params(model),
                             notes)
