"""A trained dense detector turned into the model of its LORS config.

The math lives in :mod:`lors_det.lors.from_dense` (framework-free); this
module pairs the stacks of two built models and moves the weights:

* **AdaMixer** (``configs/adamixer/*`` -> ``configs/lors/*``): every
  :class:`~lors_det.lors.LORSTLinear` / :class:`~lors_det.lors.LORSAGenerator`
  of the LORS model (``decoder.mixing.out_proj``, ``decoder.mixing.generator``)
  takes the :class:`~lors_det.lors.StackedLinear` /
  :class:`~lors_det.lors.StackedGenerator` at the same path of the dense
  model (``<path>.layers.{i}``); every other weight keeps its name.
* **LORSWrapper** (an mmdet config -> its ``projects/lors_mmdet`` config):
  each shared stack ``lors.<stack>.<lorst|lorsa>.<linear>`` takes the
  linears ``<stack>.{i}.<linear>`` of the dense detector; every other
  weight ``detector.<name>`` is the dense ``<name>``.

Anything else is a mismatch between the two configs and is refused
(:class:`ConfigMismatchError`, naming the weight): a weight of one model
that the other lacks or holds in another shape, a stack of another kind or
size. The LORS rank fields of a config (:func:`rank_fields`) are what
``--rank`` / ``--energy`` of ``tools/model_converters/dense_to_lors.py``
change.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ..lors import LORSAGenerator, LORSTLinear, StackedGenerator, StackedLinear
from ..lors.checks import first_few
from ..lors.from_dense import (FromDenseError, LayerFit, lorsa_from_dense,
                               lorsa_rank_for_energy, lorst_from_dense,
                               lorst_rank_for_energy, max_rank)

__all__ = [
    'ConfigMismatchError', 'StackPair', 'StackReport', 'pair_stacks',
    'convert_model', 'rank_fields', 'ranks_for_energy'
]


class ConfigMismatchError(ValueError):
    """The LORS config's model is not the dense config's model shared."""


@dataclass
class StackPair:
    """One LORS stack of the LORS model and its dense layers.

    ``name``: the stack's prefix in the LORS state dict; ``dense``: the
    dense layers' ``nn.Linear`` modules, one per stacked layer;
    ``dense_names``: their names in the dense state dict; ``field``: the
    config block that sets the stack's rank (see :func:`rank_fields`).
    """
    name: str
    stack: nn.Module
    dense: List[nn.Linear]
    dense_names: List[str]
    field: str


@dataclass
class StackReport:
    name: str
    kind: str  # 'LORST' or 'LORSA'
    fits: List[LayerFit]
    dense_params: int
    lors_params: int
    field: str = ''


def _submodule(module: nn.Module, name: str) -> Optional[nn.Module]:
    """``module.get_submodule(name)``, or None when there is none."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


def _is_wrapper(model: nn.Module) -> bool:
    return hasattr(model, 'detector') and isinstance(
        getattr(model, 'lors', None), nn.ModuleDict)


def _adamixer_pairs(dense: nn.Module, lors: nn.Module) -> List[StackPair]:
    pairs = []
    fields = {'generator': 'lorsa', 'out_proj': 'lorst'}
    for path, stack in lors.named_modules():
        if not isinstance(stack, (LORSTLinear, LORSAGenerator)):
            continue
        want = StackedLinear if isinstance(stack, LORSTLinear) else \
            StackedGenerator
        found = _submodule(dense, path)
        if not isinstance(found, want):
            raise ConfigMismatchError(
                f'{path} is a {type(stack).__name__} in the LORS config but '
                f'a {type(found).__name__} in the dense config (expected '
                f'{want.__name__})')
        layers = list(found.layers)
        if not all(isinstance(m, nn.Linear) for m in layers):
            raise ConfigMismatchError(
                f'{path}: the dense layers are '
                f'{type(layers[0]).__name__}, expected plain nn.Linear '
                '(compress or fold them first)')
        base, _, attr = path.rpartition('.')
        prefix = f'model.{base}.' if base else 'model.'
        pairs.append(
            StackPair(path, stack, layers,
                      [f'{path}.layers.{i}' for i in range(len(layers))],
                      prefix + fields.get(attr, attr)))
    return pairs


def _wrapper_pairs(dense: nn.Module, lors: nn.Module) -> List[StackPair]:
    pairs = []
    for e, (key, shared) in enumerate(lors.lors.items()):
        path = key.replace('-', '.')
        layers = _submodule(dense, path)
        if not isinstance(layers, nn.ModuleList):
            raise ConfigMismatchError(
                f'model.share[{e}].stack={path!r} is not an nn.ModuleList '
                f'of the dense {type(dense).__name__}')
        for kind in ('lorst', 'lorsa'):
            for tkey, stack in getattr(shared, kind).items():
                name = shared.target_names[tkey]
                linears, names = [], []
                for i, layer in enumerate(layers):
                    m = _submodule(layer, name)
                    if not isinstance(m, nn.Linear):
                        raise ConfigMismatchError(
                            f'model.share[{e}].{kind}: {path}.{i}.{name} is '
                            f'{type(m).__name__} in the dense model, '
                            'expected nn.Linear')
                    linears.append(m)
                    names.append(f'{path}.{i}.{name}')
                pairs.append(
                    StackPair(f'lors.{key}.{kind}.{tkey}', stack, linears,
                              names, f'model.share[{e}].{kind}'))
    return pairs


def pair_stacks(dense: nn.Module,
                lors: nn.Module) -> Tuple[List[StackPair], Dict[str, str]]:
    """Pair the LORS model's stacks with the dense model's layers.

    Returns:
        tuple: the :class:`StackPair` list and ``{LORS state-dict key: dense
        state-dict key}`` for every other entry of the LORS model.

    Raises:
        ConfigMismatchError: see the module docstring.
    """
    if _is_wrapper(dense) or any(
            isinstance(m, (LORSTLinear, LORSAGenerator))
            for m in dense.modules()):
        raise ConfigMismatchError(
            'the dense config already builds a LORS model; give the '
            'unshared config (e.g. configs/adamixer/..., or the mmdet config '
            'a LORSWrapper config wraps)')
    wrapper = _is_wrapper(lors)
    pairs = (_wrapper_pairs if wrapper else _adamixer_pairs)(dense, lors)
    if not pairs:
        raise ConfigMismatchError(
            'the LORS config builds no LORST/LORSA stack (is it a dense '
            'config?)')
    for p in pairs:
        if len(p.dense) != p.stack.num_layers:
            raise ConfigMismatchError(
                f'{p.name}: {p.stack.num_layers} stacked layers in the LORS '
                f'config, {len(p.dense)} in the dense one')
        out, inp = p.dense[0].out_features, p.dense[0].in_features
        if isinstance(p.stack, LORSTLinear):
            want = (p.stack.out_features, p.stack.in_features)
        else:
            want = (p.stack.num_groups *
                    sum(m * n
                        for m, n in p.stack.matrix_shapes), p.stack.query_dim)
        if (out, inp) != want:
            raise ConfigMismatchError(
                f'{p.name}: the dense layers are Linear(in={inp}, out={out}),'
                f' the LORS stack expects Linear(in={want[1]}, '
                f'out={want[0]})')
    stack_prefixes = tuple(p.name + '.' for p in pairs)
    dense_state = dense.state_dict()
    stacked = {
        f'{n}.{s}'
        for p in pairs for n in p.dense_names for s in ('weight', 'bias')
    }
    key_map, problems = {}, []
    for key, value in lors.state_dict().items():
        if key.startswith(stack_prefixes):
            continue
        src = key[len('detector.'):] if wrapper else key
        if src not in dense_state:
            problems.append(f'{key} (not in the dense model)')
        elif dense_state[src].shape != value.shape:
            problems.append(f'{key} ({tuple(value.shape)} vs dense '
                            f'{tuple(dense_state[src].shape)})')
        key_map[key] = src
    unused = sorted(set(dense_state) - set(key_map.values()) - stacked)
    problems += [f'dense {k} (not in the LORS model)' for k in unused]
    if problems:
        raise ConfigMismatchError(
            'the LORS config is not the dense config with LORS stacks: ' +
            first_few(problems, 3, sep='; '))
    return pairs, key_map


def _dense_numel(p: StackPair) -> int:
    return sum(m.weight.numel() + m.bias.numel() for m in p.dense)


@torch.no_grad()
def convert_model(dense: nn.Module,
                  lors: nn.Module,
                  refine_steps: int = 0) -> List[StackReport]:
    """Write ``lors``'s weights from the trained ``dense`` model, in place:
    every stack by :func:`~lors_det.lors.from_dense.lorst_from_dense` /
    :func:`~lors_det.lors.from_dense.lorsa_from_dense`, every other weight
    copied. Returns one :class:`StackReport` per stack."""
    from ..lors import count_parameters
    pairs, key_map = pair_stacks(dense, lors)
    dense_state = dense.state_dict()
    lors.load_state_dict({k: dense_state[v]
                          for k, v in key_map.items()},
                         strict=False)
    reports = []
    for p in pairs:
        weights = [m.weight for m in p.dense]
        biases = [m.bias for m in p.dense]
        if isinstance(p.stack, LORSTLinear):
            fits = lorst_from_dense(p.stack, weights, biases, p.name)
            kind = 'LORST'
        else:
            fits = lorsa_from_dense(p.stack, weights, biases, refine_steps,
                                    p.name)
            kind = 'LORSA'
        reports.append(
            StackReport(p.name, kind, fits, _dense_numel(p),
                        count_parameters(p.stack)['total'], p.field))
    return reports


# ---------------------------------------------------------------------------
# ranks in the config
# ---------------------------------------------------------------------------
def rank_fields(model_cfg) -> Dict[str, dict]:
    """``{field: block}`` of the LORS blocks of a config's ``model``:
    ``model.decoder.mixing.lorsa`` / ``.lorst`` (AdaMixer) or
    ``model.share[i].lorsa`` / ``.lorst`` (LORSWrapper); each block's
    ``rank`` is the rank of its stacks."""
    fields = {}
    if model_cfg.get('type') == 'LORSWrapper':
        for i, entry in enumerate(model_cfg.get('share') or []):
            for kind in ('lorst', 'lorsa'):
                if entry.get(kind):
                    fields[f'model.share[{i}].{kind}'] = entry[kind]
        return fields
    mixing = (model_cfg.get('decoder') or {}).get('mixing') or {}
    for kind in ('lorsa', 'lorst'):
        if mixing.get(kind) is not None:
            fields[f'model.decoder.mixing.{kind}'] = mixing[kind]
    return fields


def _lorsa_factory(stack: LORSAGenerator):

    def build(rank: int) -> LORSAGenerator:
        return LORSAGenerator(
            stack.query_dim,
            stack.matrix_shapes,
            stack.num_groups,
            stack.num_layers,
            rank=rank,
            num_factors=stack.num_factors,
            use_shared=stack.shared_generator is not None).double()

    return build


def ranks_for_energy(dense: nn.Module,
                     lors: nn.Module,
                     energy: float,
                     refine_steps: int = 0) -> Dict[str, int]:
    """Per config rank field (:func:`rank_fields`), the smallest rank at
    which every layer of every stack the field sets keeps ``energy`` of its
    residual (one rank per field: LORSA has one rank for all layers, and a
    field may set several stacks).

    Raises:
        FromDenseError: a stack cannot reach ``energy`` at any rank its
            matrices allow, or the field's rank is too big for another of
            its stacks.
    """
    pairs, _ = pair_stacks(dense, lors)
    per_field: Dict[str, List[Tuple[int, StackPair]]] = {}
    for p in pairs:
        weights = [m.weight for m in p.dense]
        biases = [m.bias for m in p.dense]
        if isinstance(p.stack, LORSTLinear):
            if not any(a.numel() for a in p.stack.private_A):
                continue  # shared-only ablation: no rank to choose
            rank = lorst_rank_for_energy(p.stack, weights, biases, energy,
                                         p.name)
        else:
            if not any(p.stack.num_factors):
                continue
            rank, _ = lorsa_rank_for_energy(
                _lorsa_factory(p.stack), weights, biases, energy,
                max_rank(p.stack), p.name, refine_steps)
        per_field.setdefault(p.field, []).append((rank, p))
    chosen = {}
    for name, items in per_field.items():
        rank = max(r for r, _ in items)
        for _, p in items:
            if rank > max_rank(p.stack):
                raise FromDenseError(
                    f'{name}: energy {energy} needs rank {rank}, more than '
                    f'{p.name} allows ({max_rank(p.stack)})')
        chosen[name] = rank
    return chosen


def check_rank_allowed(lors: nn.Module, dense: nn.Module,
                       rank: Optional[int]) -> None:
    """Refuse a ``--rank`` larger than some stack's matrices allow."""
    if rank is None:
        return
    for p in pair_stacks(dense, lors)[0]:
        top = max_rank(p.stack)
        if rank > top:
            raise FromDenseError(
                f'--rank {rank} is larger than {p.name} allows ({p.field}: '
                f'expected rank <= {top})')
