"""Convert a trained dense (unshared) checkpoint into a LORS checkpoint.

Usage::

    python tools/model_converters/dense_to_lors.py DENSE_CONFIG DENSE_CKPT
        LORS_CONFIG OUT [--rank R | --energy E] [--refine-steps S]
        [--out-config PATH] [--trusted] [--force]

DENSE_CONFIG is the config DENSE_CKPT was trained with (e.g.
``configs/adamixer/adamixer-2x64_r50_8xb2-1x_coco.py``, or an mmdet config
such as Sparse R-CNN's); LORS_CONFIG is the same model with LORS stacks
(``configs/lors/adamixer-lors_r50_8xb2-1x_coco.py``, or the
``projects/lors_mmdet`` LORSWrapper config of the mmdet one). Every stack
gets the mean of its dense layers as the shared part and a low-rank fit of
each layer's residual as its private part: truncated SVD (LORST), HOSVD
Tucker-2 terms (LORSA); everything else is copied. docs/from_dense.md has
the method, the fine-tune recipe and the proxy-scale evidence.

Ranks:

* default: the LORS config's ranks and numbers of terms K;
* ``--rank R``: rank R in every LORS block of the config (K kept);
* ``--energy E``: per config block (one rank for all the layers of its
  stacks), the smallest rank at which every layer keeps the fraction E of
  its residual's energy (squared Frobenius norm).

With other ranks than the LORS config's, a config inheriting it with those
ranks is written too (``--out-config``, default OUT with ``.py``): use it to
evaluate or fine-tune OUT. Prints per layer the relative reconstruction
error ``||dense - lors||_F / ||dense||_F`` and the residual energy kept, and
the parameters before/after. Reads DENSE_CKPT with the restricted reader
(no code execution), never writes over an input.
"""
import argparse
import os
import os.path as osp
import sys

from lors_det.engine.checkpoint import TRUST_ENV, CheckpointError
from lors_det.engine.from_dense import convert_dense_checkpoint
from lors_det.engine.tables import text_table


def format_result(result) -> str:
    header = ('stack', 'layer', 'rank x K', 'rel. error', 'energy kept')
    rows = []
    for s in result.stacks:
        for f in s.fits:
            rows.append((f'{s.name} ({s.kind})', str(f.layer),
                         f'{f.rank} x {f.num_factors}', f'{f.rel_error:.4f}',
                         f'{f.energy_kept:.4f}'))
    lines = [text_table(header, rows), '']
    header = ('stack', 'dense params', 'LORS params', 'reduction')
    rows = [(s.name, f'{s.dense_params:,}', f'{s.lors_params:,}',
             f'{100 * (1 - s.lors_params / s.dense_params):.1f}%')
            for s in result.stacks]
    rows.append(
        ('whole model', f'{result.dense_params:,}', f'{result.lors_params:,}',
         f'{100 * (1 - result.lors_params / result.dense_params):.1f}'
         '%'))
    lines.append(text_table(header, rows))
    lines.append('ranks: ' + ', '.join(f'{k} rank={v}'
                                       for k, v in result.ranks.items()))
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[2:]))
    parser.add_argument(
        'dense_config', help='config DENSE_CKPT was trained '
        'with')
    parser.add_argument('dense_checkpoint', help='trained dense checkpoint')
    parser.add_argument('lors_config', help='the LORS config to convert to')
    parser.add_argument('out', help='where to write the LORS checkpoint')
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        '--rank',
        type=int,
        help='one rank for every LORS '
        'block (default: the LORS config\'s ranks)')
    group.add_argument(
        '--energy',
        type=float,
        help='per LORS block, the '
        'smallest rank keeping this fraction of every '
        "layer's residual energy, in (0, 1]")
    parser.add_argument(
        '--refine-steps',
        type=int,
        default=2,
        help='HOOI refinement sweeps of the LORSA fits '
        '(default 2; 0: HOSVD only)')
    parser.add_argument(
        '--out-config',
        help='where to write the config with '
        'the new ranks (default: OUT with .py)')
    parser.add_argument(
        '--trusted',
        action='store_true',
        help='allow a full (code-executing) unpickle of '
        'DENSE_CKPT (same as LORS_DET_TRUST_CHECKPOINTS=1)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='replace existing outputs (never an input)')
    args = parser.parse_args(argv)
    if args.rank is not None and args.rank <= 0:
        parser.error(f'--rank must be a positive integer, got {args.rank}')
    if args.energy is not None and not 0 < args.energy <= 1:
        parser.error(f'--energy must be in (0, 1], got {args.energy}')
    if args.refine_steps < 0:
        parser.error(f'--refine-steps must be >= 0, got {args.refine_steps}')
    for name in ('dense_config', 'dense_checkpoint', 'lors_config'):
        if not osp.isfile(getattr(args, name)):
            parser.error(f'{name.upper().replace("CHECKPOINT", "CKPT")} file '
                         f'does not exist: {getattr(args, name)}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.trusted:
        os.environ[TRUST_ENV] = '1'
    try:
        result = convert_dense_checkpoint(
            args.dense_config,
            args.dense_checkpoint,
            args.lors_config,
            args.out,
            rank=args.rank,
            energy=args.energy,
            refine_steps=args.refine_steps,
            out_config=args.out_config,
            force=args.force)
    except (ValueError, CheckpointError, OSError) as e:
        sys.exit('error: ' + ' '.join(str(e).split()))
    print(format_result(result))
    config = result.out_config or args.lors_config
    print(f'saved {args.out}' +
          (f' and {result.out_config}' if result.out_config else ''))
    print(f'evaluate: python tools/test.py {config} {args.out}; fine-tune: '
          f'python tools/train.py {config} --cfg-options '
          f'load_from={args.out} (docs/from_dense.md)')


if __name__ == '__main__':
    main()
