"""Parameter accounting: shared vs private parameters, by name.

Modules that take part in parameter sharing declare which of their attributes
are shared across stacked layers and which are private to one layer::

    shared_param_names = ('shared_weight', )
    private_param_names = ('private_A', 'private_B', 'private_bias')

:func:`count_parameters` filters by these declared names (never by guessing
from shapes), so counts, tables and optimizer groups agree.
"""
from typing import Dict

import torch.nn as nn


def split_parameter_names(module: nn.Module) -> Dict[str, set]:
    """Names of ``module``'s parameters split into shared/private/other."""
    split = {'shared': set(), 'private': set(), 'other': set()}
    for prefix, sub in module.named_modules():
        for kind in ('shared', 'private'):
            for attr in getattr(sub, f'{kind}_param_names', ()):
                owner = getattr(sub, attr)
                if owner is None:  # e.g. use_shared=False ablations
                    continue
                params = [('', owner)] if isinstance(
                    owner, nn.Parameter) else owner.named_parameters()
                for name, _ in params:
                    full = '.'.join(x for x in (prefix, attr, name) if x)
                    split[kind].add(full)
    all_names = {name for name, _ in module.named_parameters()}
    split['other'] = all_names - split['shared'] - split['private']
    return split


def count_parameters(module: nn.Module) -> Dict[str, int]:
    """Count ``module``'s parameters: shared, private, other and total.

    Parameters frozen with ``requires_grad=False`` are counted too (they are
    part of the architecture); ``trainable`` counts only the others.
    """
    params = dict(module.named_parameters())
    split = split_parameter_names(module)
    counts = {
        k: sum(params[n].numel() for n in names)
        for k, names in split.items()
    }
    counts['total'] = sum(p.numel() for p in params.values())
    counts['trainable'] = sum(p.numel() for p in params.values()
                              if p.requires_grad)
    return counts
