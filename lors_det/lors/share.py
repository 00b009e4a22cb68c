"""Share any stack of identical layers with LORS, peft-style.

The LORS paper (Sec. 3) argues that its structure fits every stack of
layers with the same architecture, not only AdaMixer's decoder.
:class:`SharedLayers` applies it to an existing ``nn.ModuleList`` without
touching the layers' code: the ``nn.Linear`` modules named by glob patterns
(relative to one layer, e.g. ``'ffn.layers.*'``) are replaced, in every
layer, by a parameter-free view of one shared stack:

* LORST (:class:`~.lorst.LORSTLinear`) for static linears:
  ``W_i = W_shared + sum_k B_ik A_ik``, bias ``b_i`` per layer;
* LORSA (:class:`~.lorsa.LORSAGenerator`) for linears that *generate
  weights from a query* (e.g. Sparse R-CNN's ``DynamicConv.dynamic_layer``):
  the output, read as G groups of matrices ``(m_j, n_j)``, is
  ``W_shared(q) + sum_k L_ik Z_ik(q) R_ik``.

Example (a 6-layer stack of blocks with ``fc1``, ``fc2`` and a generator
``gen`` whose output is two 64 x 16 matrices)::

    shared = SharedLayers(
        blocks,
        lorst=dict(targets=['fc*'], rank=8),
        lorsa=dict(targets=['gen'], matrix_shapes=[(64, 16), (16, 64)],
                   rank=8, num_factors=[1, 1, 2, 2, 3, 3]))
    model.lors = shared      # register it: the stacks' parameters live here

Ownership: the shared stacks belong to :class:`SharedLayers` (the caller
registers it once, next to or above the layers); each view only holds an
unregistered reference to its stack and its layer index, so the state dict
stores the shared weight once and ``count_parameters`` (which filters by the
stacks' declared shared/private names) works unchanged on the model.

Init from the dense layers (:meth:`SharedLayers.reshare`): the shared weight
(and the LORSA shared generator) is copied from layer ``init_from``, each
LORST bias from its own layer, the low-rank parts get their stacks' own init
(B and the LORSA cores zero, A and the LORSA factors Kaiming). So at init
every layer computes what layer ``init_from`` computed, with its own bias.
:meth:`SharedLayers.unshare` puts dense ``nn.Linear`` modules back (the
plain architecture, e.g. for a framework's own init or for deployment).
"""
import fnmatch
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .checks import check_keys, check_non_negative, config_block
from .lorsa import LORSAGenerator
from .lorst import LORSTLinear
from .views import LORSAView, LORSTView

LORST_KEYS = ('targets', 'rank', 'num_factors', 'use_shared', 'use_private')
LORSA_KEYS = ('targets', 'matrix_shapes', 'num_groups', 'rank', 'num_factors',
              'use_shared', 'use_private')


def _key(name: str) -> str:
    # ModuleDict keys may not contain '.'; '-' cannot occur in module names
    return name.replace('.', '-')


def _patterns(field: str, targets) -> List[str]:
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, (list, tuple)) or not targets or not all(
            isinstance(t, str) and t for t in targets):
        raise ValueError(f'{field}.targets must be a non-empty list of glob '
                         f'patterns of module names, got {targets!r}')
    return list(targets)


def _match(layer: nn.Module, field: str, targets) -> List[str]:
    """Names of the ``nn.Linear`` modules of ``layer`` that ``targets``
    match; every pattern must match at least one."""
    linears = [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
    names = []
    for pattern in _patterns(field, targets):
        found = [n for n in linears if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise ValueError(
                f'{field}.targets: {pattern!r} matches no nn.Linear of the '
                f'layer; its linear layers are: {", ".join(linears)}')
        names += [n for n in found if n not in names]
    for name in names:
        parent = layer.get_submodule(name.rpartition('.')[0])
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(
                f'{field}.targets: {name!r} is the out_proj of an '
                'nn.MultiheadAttention, which reads its .weight instead of '
                'calling it, so it cannot be replaced by a view; use a '
                'pattern that leaves it out')
    return names


class SharedLayers(nn.Module):
    """LORS over the linear layers of a stack of identical layers.

    Args:
        layers (nn.ModuleList): N layers with the same architecture; the
            targeted linears are replaced in place by views.
        lorst (dict, optional): ``targets`` (glob patterns of linear names
            inside one layer) and :class:`~.lorst.LORSTLinear`'s ``rank``,
            ``num_factors`` (int or one per layer), ``use_shared``,
            ``use_private``.
        lorsa (dict, optional): ``targets``, ``matrix_shapes`` (list of
            (m_j, n_j): how the target's output is read, per group),
            ``num_groups`` G (default 1) and
            :class:`~.lorsa.LORSAGenerator`'s ``rank``, ``num_factors``,
            ``use_shared``, ``use_private``.
        init_from (int): layer whose weights become the shared ones.

    Attributes:
        lorst (nn.ModuleDict): one LORSTLinear per target, keyed by its name
            with '.' -> '-' (``'ffn-layers-1'``).
        lorsa (nn.ModuleDict): one LORSAGenerator per target, same keys.
        dense_numel (int): parameters the replaced linears held (the
            unshared count, for reports).
    """

    def __init__(self,
                 layers: nn.ModuleList,
                 lorst: Optional[dict] = None,
                 lorsa: Optional[dict] = None,
                 init_from: int = 0):
        super().__init__()
        if not isinstance(layers, nn.ModuleList) or not len(layers):
            raise ValueError('layers must be a non-empty nn.ModuleList, got '
                             f'{type(layers).__name__}')
        self.num_layers = len(layers)
        check_non_negative('init_from', init_from)
        if init_from >= self.num_layers:
            raise ValueError(f'init_from={init_from} is not a layer index; '
                             f'expected 0 <= init_from < {self.num_layers}')
        self.init_from = init_from
        lorst = dict(check_keys('lorst', lorst, LORST_KEYS))
        lorsa = dict(check_keys('lorsa', lorsa, LORSA_KEYS))
        if not (lorst or lorsa):
            raise ValueError('SharedLayers needs lorst or lorsa (or both)')
        lorst_names = _match(layers[0], 'lorst', lorst.pop(
            'targets', None)) if lorst else []
        lorsa_names = _match(layers[0], 'lorsa', lorsa.pop(
            'targets', None)) if lorsa else []
        both = set(lorst_names) & set(lorsa_names)
        if both:
            raise ValueError(f'{sorted(both)} matched by both lorst.targets '
                             'and lorsa.targets; a linear gets one of them')
        # not a submodule: the layers belong to their own parent
        object.__setattr__(self, 'layers', layers)
        #: ModuleDict key -> module name inside a layer
        self.target_names = {_key(n): n for n in lorst_names + lorsa_names}
        if len(self.target_names) != len(lorst_names) + len(lorsa_names):
            raise ValueError('target names collide once "." is replaced by '
                             f'"-": {lorst_names + lorsa_names}')
        self.lorst = nn.ModuleDict()
        self.lorsa = nn.ModuleDict()
        self.dense_numel = 0
        for name in lorst_names:
            first = self._dense_linears(name)[0]
            with config_block(f'lorst ({name})'):
                self.lorst[_key(name)] = LORSTLinear(first.in_features,
                                                     first.out_features,
                                                     self.num_layers,
                                                     **lorst).to(first.weight)
        for name in lorsa_names:
            first = self._dense_linears(name)[0]
            self.lorsa[_key(name)] = self._lorsa(name, first,
                                                 dict(lorsa)).to(first.weight)
        self.reshare(reset=False)

    def _lorsa(self, name: str, linear: nn.Linear,
               opts: dict) -> LORSAGenerator:
        field = f'lorsa ({name})'
        shapes = opts.pop('matrix_shapes', None)
        groups = opts.pop('num_groups', 1)
        try:
            size = groups * sum(m * n for m, n in shapes)
        except TypeError:
            raise ValueError(f'{field}: matrix_shapes must be a list of '
                             f'(rows, cols) pairs, got {shapes!r}') from None
        if size != linear.out_features:
            raise ValueError(
                f'{field}: num_groups x sum of rows x cols of matrix_shapes '
                f'= {groups} x {size // max(groups, 1)} = {size}, but the '
                f'linear generates {linear.out_features} values per query')
        with config_block(field):
            return LORSAGenerator(linear.in_features, shapes, groups,
                                  self.num_layers, **opts)

    @property
    def targets(self) -> Dict[str, nn.Module]:
        """``{module name: stack}`` for every shared linear."""
        stacks = {**self.lorst, **self.lorsa}
        return {self.target_names[k]: s for k, s in stacks.items()}

    def _set(self, i: int, name: str, module: nn.Module) -> None:
        parent, _, attr = name.rpartition('.')
        setattr(self.layers[i].get_submodule(parent), attr, module)

    def _dense_linears(self, name: str) -> List[nn.Linear]:
        """``name`` in every layer, checked to be like-shaped ``nn.Linear``
        modules with a bias, each its own module."""
        found = []
        for i, layer in enumerate(self.layers):
            try:
                m = layer.get_submodule(name)
            except AttributeError:
                m = None
            if not isinstance(m, nn.Linear):
                raise ValueError(
                    f'layer {i} has no nn.Linear {name!r} (got '
                    f'{type(m).__name__}); the layers of a shared stack '
                    'must have the same architecture')
            if m.bias is None:
                raise ValueError(
                    f'{name!r} has no bias; the LORS stacks keep one per '
                    'layer, so only linears with a bias can be shared')
            if found and (m.weight.shape != found[0].weight.shape):
                raise ValueError(
                    f'{name!r} is {tuple(m.weight.shape)} in layer {i} but '
                    f'{tuple(found[0].weight.shape)} in layer 0')
            if any(m is f for f in found):
                raise ValueError(f'{name!r} of layer {i} is the same module '
                                 'as in an earlier layer (already shared)')
            found.append(m)
        return found

    @property
    def is_shared(self) -> bool:
        """True while the layers hold the views (False after
        :meth:`unshare`)."""
        name = next(iter(self.targets))
        return isinstance(self.layers[0].get_submodule(name),
                          (LORSTView, LORSAView))

    @torch.no_grad()
    def reshare(self, reset: bool = True) -> None:
        """Take the dense linears now in the layers as the init of the
        stacks (see the module docstring) and put the views in their place.

        ``reset`` re-draws the low-rank parts first (their own init); the
        stacks' parameters are written in place, so an optimizer built
        before keeps working.
        """
        if self.is_shared:
            raise RuntimeError('reshare: the layers already hold the views')
        self.dense_numel = 0
        for name, stack in self.targets.items():
            dense = self._dense_linears(name)
            self.dense_numel += sum(m.weight.numel() + m.bias.numel()
                                    for m in dense)
            if reset:
                stack.reset_parameters()
            src = dense[self.init_from]
            if isinstance(stack, LORSTLinear):
                if stack.shared_weight is not None:
                    stack.shared_weight.copy_(src.weight)
                for b, m in zip(stack.private_bias, dense):
                    b.copy_(m.bias)
                view = LORSTView
            else:
                if stack.shared_generator is not None:
                    stack.shared_generator.weight.copy_(src.weight)
                    stack.shared_generator.bias.copy_(src.bias)
                view = LORSAView
            for i in range(self.num_layers):
                self._set(i, name, view(stack, i))

    @torch.no_grad()
    def unshare(self) -> None:
        """Put one dense ``nn.Linear`` per layer back in place of the views,
        with the layer's current weights (``dense_layer``): the layers are
        the plain architecture again, computing the same. The stacks keep
        their parameters; :meth:`reshare` shares again."""
        if not self.is_shared:
            raise RuntimeError('unshare: the layers hold no views')
        for name, stack in self.targets.items():
            for i in range(self.num_layers):
                weight, bias = stack.dense_layer(i)
                linear = nn.Linear(
                    weight.shape[1],
                    weight.shape[0],
                    device=weight.device,
                    dtype=weight.dtype)
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
                linear.train(self.layers[i].training)
                self._set(i, name, linear)

    def merge(self) -> None:
        """Fold every stack into dense per-layer weights for inference
        (:meth:`~.merge.MergeableStack.merge`); the views use them."""
        for stack in self.targets.values():
            stack.merge()

    def unmerge(self) -> None:
        for stack in self.targets.values():
            stack.unmerge()

    def extra_repr(self) -> str:
        return f'num_layers={self.num_layers}, init_from={self.init_from}'


def share_layers(layers: nn.ModuleList,
                 lorst: Optional[dict] = None,
                 lorsa: Optional[dict] = None,
                 init_from: int = 0,
                 owner: Optional[nn.Module] = None,
                 name: str = 'lors') -> SharedLayers:
    """Share ``layers`` (see :class:`SharedLayers`) and, if ``owner`` is
    given, register the result as ``owner.<name>`` (peft's
    ``get_peft_model`` in one call)."""
    shared = SharedLayers(
        layers, lorst=lorst, lorsa=lorsa, init_from=init_from)
    if owner is not None:
        owner.add_module(name, shared)
    return shared
