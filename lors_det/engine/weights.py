"""A checkpoint's weights against a model: extract, compare, load.

Files are read by :mod:`.checkpoint` (the one reader); this module never
unpickles.

:func:`extract_state_dict` is the one state-dict extractor (mmengine
``state_dict``, official ``model``, or a bare dict; DDP ``module.`` prefix
removed). :func:`check_state_dict` is the one comparison with a model: it
refuses values that cannot be weights (not a tensor, NaN/Inf) and entries of
another shape or dtype, naming the keys; missing model weights are an error
unless ``require_all=False`` (fine-tuning with ``load_from``). It reads only
the names, shapes and dtypes of the model's state (no copy of the model,
nothing parsed from the checkpoint's config text). :func:`load_checked`
checks an already read checkpoint and loads it; :func:`load_weights` reads,
checks and loads.
"""
from collections import OrderedDict
from typing import Dict, Optional

import torch

from ..lors.checks import first_few
from .checkpoint import CheckpointMismatchError, load_checkpoint_file

__all__ = [
    'extract_state_dict', 'check_state_dict', 'check_checkpoint',
    'load_checked', 'load_into_runner', 'load_weights'
]


def extract_state_dict(checkpoint, path: str) -> 'OrderedDict':
    """The weights of a loaded checkpoint: its ``state_dict`` (mmengine),
    its ``model`` (some official releases) or the dict itself; a ``module.``
    prefix (DDP) on every key is removed.

    Raises:
        CheckpointMismatchError: no dict of weights, naming ``path``.
    """
    if isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('state_dict'), dict):
        state = checkpoint['state_dict']
    elif isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('model'), dict):
        state = checkpoint['model']
    else:
        state = checkpoint
    if not isinstance(state, dict) or not state:
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' holds no state dict (got "
            f'{type(checkpoint).__name__}' +
            (f' with keys {sorted(map(str, checkpoint))[:8]}' if isinstance(
                checkpoint, dict) else '') + ')')
    if all(isinstance(k, str) and k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return OrderedDict(state)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, 'module'):  # DDP / TTA wrappers
        model = model.module
    return model


def _expected_entries(model: torch.nn.Module, state: dict) -> Dict[str, tuple]:
    """``{key: (shape, dtype)}`` of the model's state dict once ``state`` is
    loaded, read from the model without copying it. A module that adapts to
    the checkpoint while loading (``LoRITaLinear`` adopts a compressed
    checkpoint's factor shapes) says how, with
    ``state_entries_after_load(state, prefix)``: its entries replace the
    module's."""
    expected = {
        k: (v.shape, v.dtype)
        for k, v in model.state_dict(keep_vars=True).items()
    }
    for name, module in model.named_modules():
        after_load = getattr(module, 'state_entries_after_load', None)
        if after_load is None:
            continue
        prefix = f'{name}.' if name else ''
        entries = after_load(state, prefix)
        if entries is not None:
            for key in [k for k in expected if k.startswith(prefix)]:
                del expected[key]
            expected.update(entries)
    return expected


def check_state_dict(model: torch.nn.Module,
                     state: dict,
                     path: str,
                     require_all: bool = True,
                     config: Optional[str] = None,
                     allow_unexpected: bool = True) -> None:
    """Refuse weights that cannot be right for ``model``.

    Raises :class:`CheckpointMismatchError` naming ``path`` and the keys
    when an entry is not a tensor, a floating-point tensor holds NaN/Inf, an
    entry of the model has another shape or dtype in ``state``, or (with
    ``require_all``) a weight of the model is missing. Extra entries are
    tolerated (mmengine ignores them) and listed only alongside an error,
    unless ``allow_unexpected=False`` (a converter's output must not have
    any).
    ``model`` may be wrapped (DDP, TTA); it is neither changed nor copied
    (only the names, shapes and dtypes of its state are read).
    """
    model = _unwrap(model)
    not_tensor = [
        f'{k} ({type(v).__name__})' for k, v in state.items()
        if not isinstance(v, torch.Tensor)
    ]
    if not_tensor:
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' has {len(not_tensor)} weight entries "
            f'that are not tensors, e.g. {first_few(not_tensor)}; it was not '
            'saved by torch.save(model.state_dict()) or mmengine')
    non_finite = [
        k for k, v in state.items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if non_finite:
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' has NaN or infinite values in "
            f'{len(non_finite)} weights, e.g. {first_few(non_finite)}: the '
            'run that saved it had diverged; use an earlier checkpoint')
    expected = _expected_entries(model, state)
    missing = [k for k in expected if k not in state] if require_all else []
    unexpected = [k for k in state if k not in expected]
    bad_shape = [
        f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(shape)}'
        for k, (shape, _) in expected.items()
        if k in state and state[k].shape != shape
    ]
    bad_dtype = [
        f'{k}: checkpoint {state[k].dtype} vs model {dtype}'
        for k, (_, dtype) in expected.items()
        if k in state and state[k].dtype != dtype
    ]
    if not (missing or bad_shape or bad_dtype or
            (unexpected and not allow_unexpected)):
        return
    lines = [
        f"checkpoint file '{path}' does not fit the model" +
        (f" built from '{config}'" if config else '') + ':'
    ]
    if missing:
        lines.append(f"  {len(missing)} of the model's {len(expected)} "
                     f'weights are missing from it, e.g. {first_few(missing)}')
    if bad_shape:
        lines.append(f'  {len(bad_shape)} have another shape, e.g. '
                     f'{first_few(bad_shape, 3)}')
    if bad_dtype:
        lines.append(f'  {len(bad_dtype)} have another dtype, e.g. '
                     f'{first_few(bad_dtype, 3)}')
    if unexpected:
        lines.append(f'  {len(unexpected)} of its entries are not in the '
                     f'model, e.g. {first_few(unexpected)}')
    lines.append('It was probably trained with another config (e.g. '
                 'AdaMixer vs AdaMixer+LORS); use it with the config it was '
                 "trained with (stored in the checkpoint's meta['cfg']).")
    raise CheckpointMismatchError('\n'.join(lines))


def check_checkpoint(model: torch.nn.Module,
                     checkpoint,
                     path: str,
                     require_all: bool = True,
                     config: Optional[str] = None) -> 'OrderedDict':
    """:func:`extract_state_dict` then :func:`check_state_dict` on a loaded
    checkpoint; returns the state."""
    state = extract_state_dict(checkpoint, path)
    check_state_dict(model, state, path, require_all, config)
    return state


def load_checked(model: torch.nn.Module,
                 checkpoint,
                 path: str,
                 require_all: bool = True,
                 config: Optional[str] = None) -> 'OrderedDict':
    """:func:`check_checkpoint` on an already read ``checkpoint``, then load
    its weights into ``model`` (unwrapped from DDP/TTA); returns the
    state."""
    state = check_checkpoint(model, checkpoint, path, require_all, config)
    _unwrap(model).load_state_dict(state, strict=False)  # checked above
    return state


def load_into_runner(runner,
                     checkpoint,
                     path: str,
                     config: Optional[str] = None) -> None:
    """Load an already read ``checkpoint`` into ``runner.model`` as
    ``Runner.load_checkpoint`` does, without reading the file again: the
    hooks' ``after_load_checkpoint`` first (``EMAHook`` swaps in the EMA
    weights), then :func:`load_checked` (every weight present)."""
    runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    load_checked(runner.model, checkpoint, path, config=config)
    runner.logger.info(f'Load checkpoint from {path}')


def load_weights(model: torch.nn.Module,
                 path: str,
                 require_all: bool = True,
                 config: Optional[str] = None) -> dict:
    """Read ``path``, check its weights against ``model`` and load them.

    Returns:
        dict: the loaded checkpoint (its ``meta`` etc. for the caller).
    """
    checkpoint = load_checkpoint_file(path)
    load_checked(model, checkpoint, path, require_all, config)
    return checkpoint
