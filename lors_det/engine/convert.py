"""Checkpoint files converted: official keys renamed, LoRITa compressed.

The file-level work behind ``tools/model_converters/``: read the input with
the one reader (:mod:`.checkpoint`, no code execution), refuse outputs that
are an input (:func:`.fileio.check_outputs`), check the result against a
model with the one comparison (:func:`.weights.check_state_dict`), and
write atomically. The transformations themselves live with what they
describe: the rename rules in :mod:`lors_det.models.official_keys`, the rank
selection and SVD truncation in :mod:`lors_det.efficient.lorita_compress`.
"""
import os.path as osp
from collections import OrderedDict
from typing import Callable, Optional, Tuple

import torch.nn as nn

from ..efficient.lorita_compress import (CompressionReport,
                                         LoRITaCompressError, check_value,
                                         compress_model, find_lorita_layers)
from ..lors.checks import first_few
from ..models.official_keys import (CONVERTERS, SOURCES, missing_keys,
                                    stage_indices)
from ..models.param_counts import build_model
from .checkpoint import load_checkpoint_file
from .fileio import check_outputs, save_checkpoint
from .weights import check_state_dict, extract_state_dict, load_weights

__all__ = ['convert_checkpoint_file', 'compress_checkpoint']

MAX_KEYS_SHOWN = 5  # key names a message lists before '... (N more)'


def convert_checkpoint_file(src: str,
                            dst: str,
                            source: str,
                            config: Optional[str] = None,
                            converter: str = '',
                            log: Callable[[str], None] = print,
                            force: bool = False,
                            model: Optional[nn.Module] = None) -> dict:
    """Load ``src`` (:func:`~lors_det.engine.checkpoint.load_checkpoint_file`:
    no code execution), convert its keys, save ``dict(state_dict, meta)`` to
    ``dst`` atomically and log a summary. ``dst`` may not be ``src`` or
    ``config``, nor an existing file unless ``force``.

    Args:
        src, dst (str): checkpoint paths.
        source (str): ``'adamixer'`` or ``'lors'``.
        config (str, optional): a ``lors_det`` config; the converted keys and
            shapes are then checked against the model it builds, and
            unexpected keys or shape mismatches raise.
        converter (str): name recorded in ``meta``.
        force (bool): replace an existing ``dst``.
        model (nn.Module, optional): ``config``'s model, already built
            (built from ``config`` if None).

    Returns:
        dict: the saved checkpoint.
    """
    if source not in CONVERTERS:
        raise ValueError(f'source must be one of {sorted(CONVERTERS)}')
    inputs = dict(SRC=src, **({'--config': config} if config else {}))
    check_outputs(dict(DST=dst), inputs, force=force)
    checkpoint = load_checkpoint_file(src)
    state_dict = extract_state_dict(checkpoint, src)
    old_meta = checkpoint.get('meta') if isinstance(
        checkpoint.get('meta'), dict) else {}
    new = CONVERTERS[source](state_dict)
    missing = missing_keys(new, source)
    num_stages = len(stage_indices(new, r'^decoder\.stages\.(\d+)\.'))
    meta = dict(
        converted_from=osp.abspath(src),
        source_format=SOURCES[source]['name'],
        converter=converter or f'lors_det.engine.convert[{source}]',
        num_stages=num_stages)
    if old_meta.get('CLASSES') is not None:
        meta['dataset_meta'] = dict(classes=tuple(old_meta['CLASSES']))
    kept = {
        k: old_meta[k]
        for k in ('mmdet_version', 'epoch', 'iter') if k in old_meta
    }
    if kept:
        meta['source_meta'] = kept
    if config is not None:
        if model is None:
            model = build_model(config)
        check_state_dict(
            model,
            new,
            f'{src} (converted)',
            require_all=False,
            allow_unexpected=False,
            config=config)
        missing = sorted(set(missing) | (set(model.state_dict()) - set(new)))
    out = dict(state_dict=new, meta=meta)
    save_checkpoint(out, dst)
    n_params = sum(v.numel() for v in new.values())
    groups = OrderedDict()
    for k in new:
        top = k.split('.', 1)[0]
        groups[top] = groups.get(top, 0) + 1
    log(f'converted {SOURCES[source]["name"]} checkpoint {src}')
    log(f'  {len(state_dict)} source keys -> {len(new)} keys '
        f'({n_params:,} values), {num_stages} decoder stages')
    log('  keys per component: ' + ', '.join(f'{k}: {v}'
                                             for k, v in groups.items()))
    if missing:
        # a few names and the count: a checkpoint of another model misses
        # hundreds, and the first ones say which part
        log(f'  WARNING: {len(missing)} target key(s) missing '
            '(they keep their initialisation when loaded non-strictly): ' +
            first_few(missing, MAX_KEYS_SHOWN))
    else:
        log('  no target key missing' +
            (f' (checked against {config})' if config else ''))
    log(f'saved to {dst}')
    return out


def compress_checkpoint(
        config,
        checkpoint: str,
        out: Optional[str],
        method: str,
        value,
        model: Optional[nn.Module] = None,
        force: bool = False) -> Tuple[CompressionReport, nn.Module]:
    """Build ``config``'s model, load ``checkpoint``, compress, save ``out``.

    Args:
        config: config path or :class:`mmengine.Config`.
        checkpoint: path of an mmengine checkpoint.
        out: where to write ``dict(meta=..., state_dict=...)`` (None: do not
            write).
        method, value: see :func:`compress_model`.
        model: an already built model of ``config`` (built if None).
        force: replace an existing ``out`` (never ``checkpoint`` or the
            config).

    ``checkpoint`` is read with
    :func:`lors_det.engine.checkpoint.load_checkpoint_file` (no code
    execution; ``LORS_DET_TRUST_CHECKPOINTS=1`` for files that need more)
    and checked with ``check_checkpoint`` (every weight present, tensors,
    finite, same shapes and dtypes); ``out`` is written atomically.

    Returns:
        tuple: the report and the compressed model.
    """
    value = check_value(method, value)
    if out is not None:
        config_path = config if isinstance(config, str) else getattr(
            config, 'filename', None)
        check_outputs(
            dict(OUT=out),
            dict(
                CKPT=checkpoint,
                **({
                    'CONFIG': config_path
                } if config_path else {})),
            force=force)
    if model is None:
        model = build_model(config)
    find_lorita_layers(model)  # fail before loading anything
    if not osp.isfile(checkpoint):
        raise LoRITaCompressError(f'checkpoint does not exist: {checkpoint}')
    ckpt = load_weights(model, checkpoint)
    model.eval()
    report = compress_model(model, method, value)
    if out is not None:
        src_meta = ckpt.get('meta') if isinstance(ckpt.get('meta'),
                                                  dict) else {}
        meta = dict(src_meta)
        meta['lorita_compress'] = dict(
            report.to_meta(),
            source_checkpoint=osp.abspath(checkpoint),
            config=config if isinstance(config, str) else getattr(
                config, 'filename', None))
        state_dict = OrderedDict((k, v.detach().cpu().clone())
                                 for k, v in model.state_dict().items())
        save_checkpoint(dict(meta=meta, state_dict=state_dict), out)
    return report, model
