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
compressed shapes on load). Logic: :mod:`lors_det.utils.lorita_compress`.
"""
import argparse
import os
import os.path as osp
import sys

from lors_det.engine.checkpoint import TRUST_ENV, CheckpointError
from lors_det.utils.lorita_compress import (LoRITaCompressError, check_value,
                                            compress_checkpoint, format_report)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.split('\n')[2:]))
    parser.add_argument('config', help='the config the model was trained '
                        'with (it has LoRITa layers)')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('out', help='where to write the compressed checkpoint')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--rank', type=int, help='rank R for every layer')
    group.add_argument('--energy', type=float,
                       help='per-layer fraction of squared singular values '
                       'kept, in (0, 1]')
    group.add_argument('--ratio', type=float,
                       help='global fraction of singular values kept, in '
                       '(0, 1]')
    parser.add_argument(
        '--trusted', action='store_true',
        help='allow a full (code-executing) unpickle of CKPT if the safe '
        'loader refuses it (same as LORS_DET_TRUST_CHECKPOINTS=1)')
    parser.add_argument('--force', action='store_true',
                        help='replace OUT if it exists')
    args = parser.parse_args(argv)
    for method in ('rank', 'energy', 'ratio'):
        value = getattr(args, method)
        if value is not None:
            args.method, args.value = method, value
    try:
        check_value(args.method, args.value)
    except LoRITaCompressError as e:
        parser.error(str(e))
    if not osp.isfile(args.config):
        parser.error(f'config file does not exist: {args.config}')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file does not exist: {args.checkpoint}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.trusted:
        os.environ[TRUST_ENV] = '1'
    try:
        report, _ = compress_checkpoint(args.config, args.checkpoint,
                                        args.out, args.method, args.value,
                                        force=args.force)
    except (ValueError, CheckpointError, OSError) as e:  # incl. bad paths
        sys.exit(f'error: {e}')
    print(format_report(report))
    print(f'saved {args.out}; evaluate with: python tools/test.py '
          f'{args.config} {args.out}')


if __name__ == '__main__':
    main()
