"""Compress the LoRITa layers of a trained checkpoint by SVD truncation.

Usage::

    python tools/model_converters/lorita_compress.py CONFIG CKPT OUT
        (--rank R | --energy E | --ratio P) [--trusted] [--force]

Builds CONFIG's model, loads CKPT (an mmengine checkpoint), multiplies out
every ``LoRITaLinear`` (exact) and keeps its top singular directions:

* ``--rank R``: rank R in every layer (clamped to the layer's max rank,
  ``min(in, out)``; reported);
* ``--energy E``: per layer, the smallest rank keeping the fraction E of the
  squared singular values;
* ``--ratio P``: global budget, the fraction P of all singular values of all
  LoRITa layers, ranked by ``s / s_max`` of their layer (LoRITa's global
  criterion), at least rank 1 per layer.

Writes OUT as ``dict(meta=..., state_dict=...)``; ``meta['lorita_compress']``
records the method, value and per-layer ranks. Evaluate it with the SAME
config: ``python tools/test.py CONFIG OUT`` (the LoRITa layers adopt the
compressed shapes on load). Logic: :mod:`lors_det.efficient.lorita_compress`
(ranks, SVD) and :func:`lors_det.engine.convert.compress_checkpoint` (files).
"""
import argparse
import os
import os.path as osp
import sys

from lors_det.efficient.lorita_compress import (CompressionReport,
                                                LoRITaCompressError,
                                                check_value)
from lors_det.engine.checkpoint import TRUST_ENV, CheckpointError
from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.convert import compress_checkpoint
from lors_det.engine.tables import text_table
from lors_det.models.param_counts import build_model


def format_report(report: CompressionReport) -> str:
    """Per-layer table and totals."""

    def num(v):
        return f'{v:,}'

    header = ('layer', 'shape (out x in)', 'factors', 'rank kept',
              'energy kept', 'params before', 'params after', 'dense')
    rows = [(r.name, f'{r.out_features} x {r.in_features}', str(r.num_factors),
             f'{r.rank}/{r.max_rank}' + (' (clamped)' if r.clamped else ''),
             f'{r.energy_kept:.4f}', num(r.params_before), num(r.params_after),
             num(r.dense_params)) for r in report.layers]

    def pct(after, before):
        return f'{100.0 * (1 - after / before):.1f}% fewer' if before else ''

    kept, total = report.singular_values_kept
    lines = [
        f'LoRITa compression: --{report.method} {report.value}', '',
        text_table(header, rows)
    ]
    lines += [
        '',
        f'singular values kept: {kept} / {total}',
        f'LoRITa layers ({len(report.layers)}): '
        f'{num(report.lorita_params_before)} -> '
        f'{num(report.lorita_params_after)} parameters '
        f'({pct(report.lorita_params_after, report.lorita_params_before)}; '
        f'dense equivalent {num(sum(r.dense_params for r in report.layers))})',
        f'whole model: {num(report.model_params_before)} -> '
        f'{num(report.model_params_after)} parameters '
        f'({pct(report.model_params_after, report.model_params_before)})',
    ]
    lines += [f'note: {n}' for n in report.notes]
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[2:]))
    parser.add_argument(
        'config',
        help='the config the model was trained '
        'with (it has LoRITa layers)')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('out', help='where to write the compressed checkpoint')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--rank', type=int, help='rank R for every layer')
    group.add_argument(
        '--energy',
        type=float,
        help='per-layer fraction of squared singular values '
        'kept, in (0, 1]')
    group.add_argument(
        '--ratio',
        type=float,
        help='global fraction of singular values kept, in '
        '(0, 1]')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='allow a full (code-executing) unpickle of CKPT if the safe '
        'loader refuses it (same as LORS_DET_TRUST_CHECKPOINTS=1)')
    parser.add_argument(
        '--force', action='store_true', help='replace OUT if it exists')
    args = parser.parse_args(argv)
    for method in ('rank', 'energy', 'ratio'):
        value = getattr(args, method)
        if value is not None:
            args.method, args.value = method, value
    try:
        check_value(args.method, args.value)
    except LoRITaCompressError as e:
        parser.error(str(e))
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file does not exist: {args.checkpoint}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.trusted:
        os.environ[TRUST_ENV] = '1'
    with config_errors(args.config):
        cfg = load_tool_config(args.config)
        model = build_model(cfg)
    try:
        report, _ = compress_checkpoint(
            cfg,
            args.checkpoint,
            args.out,
            args.method,
            args.value,
            model=model,
            force=args.force)
    except (ValueError, CheckpointError, OSError) as e:  # incl. bad paths
        sys.exit(f'error: {e}')
    print(format_report(report))
    print(f'saved {args.out}; evaluate with: python tools/test.py '
          f'{args.config} {args.out}')


if __name__ == '__main__':
    main()
