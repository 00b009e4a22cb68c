"""The file-level work of ``tools/model_converters/dense_to_lors.py``.

Read the dense checkpoint with the one reader and check it against the
dense config's model (:func:`.weights.load_weights`), build the LORS
config's model (at ``--rank`` / the ``--energy`` ranks if asked), convert
(:func:`lors_det.models.from_dense.convert_model`), check the result against
that model and write it atomically; with other ranks than the LORS config's,
also write a config that inherits it with those ranks. No output may be an
input (:func:`.fileio.check_outputs`).
"""
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from mmengine.config import Config

from ..lors import count_parameters
from ..lors.from_dense import FromDenseError
from ..models.from_dense import (StackReport, check_rank_allowed,
                                 convert_model, pair_stacks, rank_fields,
                                 ranks_for_energy)
from ..models.param_counts import build_model
from .fileio import atomic_write_text, check_outputs, save_checkpoint
from .weights import check_state_dict, load_weights

__all__ = ['DenseToLorsResult', 'convert_dense_checkpoint']


@dataclass
class DenseToLorsResult:
    stacks: List[StackReport]
    ranks: Dict[str, object]  # config field -> rank used
    changed: bool  # ranks differ from the LORS config's
    dense_params: int
    lors_params: int
    out_config: Optional[str] = None
    notes: List[str] = field(default_factory=list)


def _set_ranks(cfg: Config, ranks: Dict[str, int]) -> None:
    fields = rank_fields(cfg.model)
    for name, rank in ranks.items():
        fields[name]['rank'] = rank


def _config_text(lors_config: str, out_config: str, cfg: Config,
                 ranks: Dict[str, int]) -> str:
    base = osp.relpath(
        osp.abspath(lors_config), osp.dirname(osp.abspath(out_config)))
    head = ('# Written by tools/model_converters/dense_to_lors.py: '
            f'{lors_config}\n# with the ranks of the converted checkpoint '
            f'({", ".join(f"{k} rank={v}" for k, v in ranks.items())}).\n'
            f'_base_ = {base!r}\n')
    if cfg.model.get('type') == 'LORSWrapper':
        share = [dict(e) for e in cfg.model.to_dict()['share']]
        return head + f'model = dict(share={share!r})\n'
    mixing = {
        name.rsplit('.', 1)[1]: dict(rank=r)
        for name, r in ranks.items()
    }
    return head + ('model = dict(decoder=dict(mixing=dict(' +
                   ', '.join(f'{k}=dict(rank={v["rank"]})'
                             for k, v in mixing.items()) + ')))\n')


def convert_dense_checkpoint(
        dense_config: str,
        dense_checkpoint: str,
        lors_config: str,
        out: str,
        rank: Optional[int] = None,
        energy: Optional[float] = None,
        refine_steps: int = 0,
        out_config: Optional[str] = None,
        force: bool = False,
        log: Callable[[str], None] = print) -> DenseToLorsResult:
    """Convert a trained dense checkpoint into a LORS checkpoint.

    Args:
        dense_config, dense_checkpoint: the trained unshared model.
        lors_config: its LORS config (same model with LORS stacks).
        out: the LORS checkpoint to write (``dict(state_dict, meta)``).
        rank: one rank for every LORS block of the config (None: the
            config's).
        energy: instead of ``rank``, per config block the smallest rank at
            which every layer keeps this fraction of its residual energy.
        refine_steps: HOOI sweeps of the LORSA fits.
        out_config: where to write the config with the new ranks (default
            ``OUT`` with ``.py``), written only when the ranks change.
        force: replace existing outputs (never an input).

    Raises:
        FromDenseError, ConfigMismatchError (ValueError): the configs, the
            ranks or the energy do not fit; CheckpointError: the checkpoint.
    """
    if rank is not None and energy is not None:
        raise FromDenseError('give --rank or --energy, not both')
    if out_config is None and (rank is not None or energy is not None):
        out_config = osp.splitext(out)[0] + '.py'
    inputs = dict(
        DENSE_CONFIG=dense_config,
        DENSE_CKPT=dense_checkpoint,
        LORS_CONFIG=lors_config)
    outputs = dict(
        OUT=out, **({
            '--out-config': out_config
        } if out_config else {}))
    check_outputs(outputs, inputs, force=force)
    dense = build_model(dense_config).eval()
    checkpoint = load_weights(dense, dense_checkpoint, config=dense_config)
    cfg = Config.fromfile(lors_config)
    lors = build_model(cfg)
    pair_stacks(dense, lors)  # refuse mismatching configs before any work
    config_ranks = {
        k: v.get('rank')
        for k, v in rank_fields(cfg.model).items()
    }
    ranks = dict(config_ranks)
    if rank is not None:
        check_rank_allowed(lors, dense, rank)
        ranks = {k: rank for k in config_ranks}
    elif energy is not None:
        if not 0 < energy <= 1:
            raise FromDenseError(f'--energy must be in (0, 1], got {energy}')
        ranks.update(ranks_for_energy(dense, lors, energy, refine_steps))
    changed = ranks != config_ranks
    if changed:
        _set_ranks(cfg, ranks)
        lors = build_model(cfg)
    else:
        out_config = None
    lors.eval()
    stacks = convert_model(dense, lors, refine_steps)
    state = OrderedDict(
        (k, v.detach().cpu().clone()) for k, v in lors.state_dict().items())
    check_state_dict(
        lors,
        state,
        f'{out} (converted)',
        allow_unexpected=False,
        config=lors_config)
    src_meta = checkpoint.get('meta') if isinstance(
        checkpoint.get('meta'), dict) else {}
    meta = {
        k: src_meta[k]
        for k in ('dataset_meta', 'mmdet_version') if k in src_meta
    }
    meta['dense_to_lors'] = dict(
        dense_config=dense_config,
        dense_checkpoint=osp.abspath(dense_checkpoint),
        lors_config=out_config or lors_config,
        ranks=ranks,
        energy=energy,
        refine_steps=refine_steps,
        layers={
            s.name: [
                dict(
                    layer=f.layer,
                    rank=f.rank,
                    num_factors=f.num_factors,
                    rel_error=f.rel_error,
                    energy_kept=f.energy_kept) for f in s.fits
            ]
            for s in stacks
        })
    save_checkpoint(dict(state_dict=state, meta=meta), out)
    if out_config:
        atomic_write_text(out_config,
                          _config_text(lors_config, out_config, cfg, ranks))
    with torch.no_grad():
        return DenseToLorsResult(stacks, ranks, changed,
                                 count_parameters(dense)['total'],
                                 count_parameters(lors)['total'], out_config)
