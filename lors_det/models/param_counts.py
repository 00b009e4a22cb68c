"""Parameter counts of a detector built from a config, per component.

Used by ``tools/analysis/count_params.py`` (one config, text or JSON; it
formats the table),
``tools/analysis/params_table.py`` (``docs/params.md``) and the tests, so the
numbers are computed in exactly one place. Shared/private splits come from
:func:`lors_det.lors.count_parameters`, i.e. from the names the LORS modules
declare, never from guessing by shape.

Typical use::

    from lors_det.models.param_counts import param_counts
    counts = param_counts('configs/lors/adamixer-lors_r50_8xb2-1x_coco.py')
    counts['decoder']['total'], counts['decoder']['shared']

Building a model never loads pretrained weights (only ``init_weights()``
does, and it is not called here), so this works offline.
"""
import contextlib
import inspect
import sys
from typing import Dict, Union

import torch.nn as nn
from mmengine.config import Config

from ..lors import count_parameters

#: top-level components of :class:`~lors_det.models.AdaMixer`, in order
COMPONENTS = ('backbone', 'neck', 'query_generator', 'decoder')
#: decoder sub-parts reported one per line (``stages`` summed over stages)
DECODER_PARTS = ('stages', 'mixing.generator', 'mixing.out_proj',
                 'mixing.norms')


def load_config(config: Union[str, Config]) -> Config:
    """A :class:`Config` from a path (or the config itself)."""
    return config if isinstance(config, Config) else Config.fromfile(config)


def build_model(config: Union[str, Config]) -> nn.Module:
    """Build ``cfg.model`` with mmdet's registries (no weights loaded).

    Anything the builders print goes to stderr, so a caller's stdout (e.g.
    ``count_params.py --json``) stays clean.
    """
    # the plugin's modules are registered: importing this module imported
    # lors_det first
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = load_config(config)
    with contextlib.redirect_stdout(sys.stderr):
        return MODELS.build(cfg.model)


def _decoder_defaults() -> Dict[str, object]:
    from .roi_heads import AdaMixerDecoder
    return {
        name: p.default
        for name, p in inspect.signature(
            AdaMixerDecoder.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def decoder_settings(config: Union[str, Config]) -> Dict[str, object]:
    """The decoder settings a config chooses, read from ``cfg.model``
    (``AdaMixerDecoder``'s defaults fill what the config leaves out)."""
    model = load_config(config).model
    dec = dict(_decoder_defaults())
    dec.update(model.get('decoder', {}))
    mixing = dict(dec.get('mixing') or {})
    stage = dict(dec.get('stage') or {})
    return dict(
        num_queries=model.get('query_generator', {}).get('num_queries', 100),
        num_stages=dec['num_stages'],
        num_classes=dec['num_classes'],
        content_dim=dec['content_dim'],
        num_groups=dec['num_groups'],
        in_points=dec['in_points'],
        out_points=dec['out_points'],
        lorsa=mixing.get('lorsa'),
        lorst=mixing.get('lorst'),
        out_proj_lorita=mixing.get('out_proj_lorita'),
        ffn=dict(stage.get('ffn') or {}),
        stage={k: v
               for k, v in stage.items() if k != 'ffn'},
    )


def _fmt_opts(opts: dict) -> str:
    return ', '.join(f'{k}={v}' for k, v in opts.items())


def describe_decoder(config: Union[str, Config]) -> str:
    """One line saying what the config sets in the decoder."""
    s = decoder_settings(config)
    gen = ('LORSA(' + _fmt_opts(s['lorsa']) +
           ')' if s['lorsa'] is not None else 'dense per stage')
    if s['lorst'] is not None:
        out = 'LORST(' + _fmt_opts(s['lorst']) + ')'
    elif s['out_proj_lorita'] is not None:
        out = 'LoRITa(' + _fmt_opts(s['out_proj_lorita']) + ')'
    else:
        out = 'dense per stage'
    ffn = s['ffn']
    if ffn.get('tied'):
        ffn_s = 'tied'
    elif ffn.get('lorita') is not None:
        ffn_s = 'LoRITa(' + _fmt_opts(ffn['lorita']) + ')'
    else:
        ffn_s = 'plain'
    return (f"decoder: {s['num_stages']} stages, {s['num_queries']} queries, "
            f"C={s['content_dim']}, G={s['num_groups']}, "
            f"P_in={s['in_points']}, P_out={s['out_points']}, "
            f"classes={s['num_classes']}; mixing generator: {gen}; "
            f'mixing out_proj: {out}; ffn: {ffn_s}')


def model_param_counts(model: nn.Module) -> Dict[str, Dict[str, int]]:
    """Counts of a built AdaMixer model.

    Returns:
        dict: ``{'backbone', 'neck', 'query_generator', 'decoder', 'total'}``
        each a :func:`count_parameters` dict (``shared``, ``private``,
        ``other``, ``total``, ``trainable``), plus ``'decoder_parts'``:
        ``{part: counts}`` for :data:`DECODER_PARTS` and, only if some
        decoder parameter belongs to none of them, ``'rest'``.
    """
    missing = [name for name in COMPONENTS if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f'parameter counts by component are defined for AdaMixer models '
            f'({", ".join(COMPONENTS)}); a {type(model).__name__} has no '
            f'{", ".join(missing)} (a LORSWrapper logs its shared / private '
            'counts when it is built: docs/lors_mmdet.md)')
    counts = {
        name: count_parameters(getattr(model, name))
        for name in COMPONENTS
    }
    counts['total'] = count_parameters(model)
    decoder = model.decoder
    parts = {
        name: count_parameters(decoder.get_submodule(name))
        for name in DECODER_PARTS
    }
    rest = {
        k: counts['decoder'][k] - sum(p[k] for p in parts.values())
        for k in counts['decoder']
    }
    if any(rest.values()):
        parts['rest'] = rest
    counts['decoder_parts'] = parts
    return counts


def param_counts(config: Union[str, Config]) -> Dict[str, Dict[str, int]]:
    """Build the config's model and count it (see
    :func:`model_param_counts`)."""
    return model_param_counts(build_model(config))


def json_summary(counts: Dict[str, Dict[str, int]]) -> Dict[str, int]:
    """Flat ints from :func:`model_param_counts`: the totals of
    :data:`COMPONENTS` and of the model, ``decoder_shared`` and
    ``decoder_private``."""
    out = {name: int(counts[name]['total']) for name in (*COMPONENTS, 'total')}
    out['decoder_shared'] = int(counts['decoder']['shared'])
    out['decoder_private'] = int(counts['decoder']['private'])
    return out


def reduction(value: int, reference: int) -> float:
    """Relative reduction ``1 - value / reference`` (0.7 = 70% fewer)."""
    return 1.0 - value / reference
