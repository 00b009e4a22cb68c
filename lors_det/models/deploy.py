"""Merging LORS in a detector: the one place every caller goes through.

Every LORS stack (:class:`~lors_det.lors.MergeableStack`: a LORSA generator
or a LORST linear) is affine per layer once trained, so it folds exactly
into one dense linear per layer (the mechanism is in
:mod:`lors_det.lors.merge`). This module applies that to a whole detector,
two ways:

* in place, for inference (:func:`merge_lors` / :func:`unmerge_lors`): the
  stacks keep their parameters and compute with the dense copy; called by
  ``AdaMixer.merge_lors``, ``LORSWrapper.merge_lors`` and hence by
  ``tools/test.py --merge-lors``, the ONNX exporter and the demo;
* as a deploy checkpoint (:func:`to_deploy`, ``tools/model_converters/
  lors_merge.py``): the model without LORS, with its dense weights. For
  ``AdaMixer`` that is the same config with ``decoder.mixing.lorsa=None``
  and ``lorst=None`` (AdaMixer's unshared stages); for ``LORSWrapper`` it is
  the wrapped mmdet detector's own config (``model.detector``), whose
  checkpoint then loads into an unmodified mmdet model.

Either way the outputs are the LORS model's; the deploy model is larger
(dense weights per stage), the LORS checkpoint stays the training asset.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from ..lors import MergeableStack, SharedLayers

__all__ = [
    'lors_stacks', 'is_merged', 'merge_lors', 'unmerge_lors', 'to_deploy'
]


def lors_stacks(model: nn.Module) -> List[MergeableStack]:
    """Every LORS stack of ``model`` (empty for a model without LORS)."""
    return [m for m in model.modules() if isinstance(m, MergeableStack)]


def is_merged(model: nn.Module) -> bool:
    """Whether :func:`merge_lors` is in effect on ``model``."""
    return any(m.merged for m in lors_stacks(model))


def merge_lors(model: nn.Module) -> int:
    """Fold every LORS stack of ``model`` into dense per-layer weights, for
    inference (same outputs). Call it after loading the weights: loading a
    state dict unmerges. Returns the number of stacks merged.

    Raises:
        ValueError: the model has no LORS stack, or merged weights are not
            finite.
    """
    stacks = lors_stacks(model)
    if not stacks:
        raise ValueError(
            f'merge_lors: the {type(model).__name__} model has no LORS layer '
            '(decoder.mixing.lorsa and decoder.mixing.lorst are not set); '
            'nothing to merge')
    for stack in stacks:
        stack.merge()
    return len(stacks)


def unmerge_lors(model: nn.Module) -> None:
    """Drop the dense weights of :func:`merge_lors` (no-op if none)."""
    for stack in lors_stacks(model):
        stack.unmerge()


def check_not_merged(model: nn.Module) -> None:
    """Refuse to train a merged model (``loss`` calls it).

    Raises:
        RuntimeError: naming ``unmerge_lors()``.
    """
    if is_merged(model):
        raise RuntimeError(
            'loss() on a model with merged LORS weights: they are an '
            'inference copy that training would leave stale; call '
            'unmerge_lors() before training')


@torch.no_grad()
def _dense_wrapped_detector(model: nn.Module,
                            shared: List[SharedLayers]) -> Dict:
    """The state dict of ``model.detector`` with every shared linear back as
    a dense ``nn.Linear`` per layer (the keys of the unshared detector)."""
    detector = model.detector
    paths = {id(m): name for name, m in detector.named_modules()}
    state = detector.state_dict()  # the views hold no parameters
    for sharing in shared:
        stack_path = paths[id(sharing.layers)]
        for name, stack in sharing.targets.items():
            for i in range(sharing.num_layers):
                weight, bias = stack.dense_layer(i)
                prefix = f'{stack_path}.{i}.{name}'
                state[f'{prefix}.weight'] = weight.clone()
                state[f'{prefix}.bias'] = bias.clone()
    return state


def to_deploy(cfg: Config, model: nn.Module) -> Tuple[Config, Dict]:
    """The deploy config and state dict of a LORS ``model`` built from
    ``cfg`` (weights as loaded; ``model`` is not changed): see the module
    docstring for the two kinds of model.

    Raises:
        ValueError: the model has no LORS stack (naming the config).
    """
    stacks = {
        n: m
        for n, m in model.named_modules() if isinstance(m, MergeableStack)
    }
    if not stacks:
        raise ValueError(f'{cfg.filename}: the model has no LORS layer '
                         '(mixing.lorsa and mixing.lorst are not set); '
                         'nothing to merge')
    deploy = Config(cfg.to_dict())
    shared = [m for m in model.modules() if isinstance(m, SharedLayers)]
    if shared:  # LORSWrapper: the mmdet detector it wraps, unshared
        deploy.model = deploy.model.detector
        return deploy, _dense_wrapped_detector(model, shared)
    state = model.state_dict()
    for name, module in stacks.items():
        for key in [k for k in state if k.startswith(name + '.')]:
            del state[key]
        state.update(
            {f'{name}.{k}': v
             for k, v in module.dense_state_dict().items()})
    deploy.model.decoder.mixing.lorsa = None
    deploy.model.decoder.mixing.lorst = None
    return deploy, state
