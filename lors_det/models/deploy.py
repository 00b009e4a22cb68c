"""LORS model -> deploy model: dense per-stage weights, AdaMixer's layout.

Every LORS stack (:class:`~lors_det.lors.MergeableStack`: LORSA generator,
LORST output linear) folds exactly into one dense module per stage, so a
LORS detector becomes an AdaMixer detector with the same outputs
(``mixing.lorsa=None``, ``mixing.lorst=None``). The deploy model is larger
(dense weights per stage): it trades parameters for speed.
"""
from typing import Dict, Tuple

import torch.nn as nn
from mmengine.config import Config

from ..lors import MergeableStack

__all__ = ['to_deploy']


def to_deploy(cfg: Config, model: nn.Module) -> Tuple[Config, Dict]:
    """The deploy config and state dict of a LORS ``model`` built from
    ``cfg`` (weights as loaded; ``model`` is not changed).

    Raises:
        ValueError: the model has no LORS stack (naming the config).
    """
    stacks = {n: m for n, m in model.named_modules()
              if isinstance(m, MergeableStack)}
    if not stacks:
        raise ValueError(f'{cfg.filename}: the model has no LORS layer '
                         '(mixing.lorsa and mixing.lorst are not set); '
                         'nothing to merge')
    state = model.state_dict()
    for name, module in stacks.items():
        for key in [k for k in state if k.startswith(name + '.')]:
            del state[key]
        state.update({f'{name}.{k}': v
                      for k, v in module.dense_state_dict().items()})
    deploy = Config(cfg.to_dict())
    deploy.model.decoder.mixing.lorsa = None
    deploy.model.decoder.mixing.lorst = None
    return deploy, state
