"""Plot a run's training loss and validation mAP curves.

Usage::

    python tools/analysis/plot_curves.py WORK_DIR [--out FILE.png]

``WORK_DIR`` is a work dir (its newest ``<timestamp>/vis_data/scalars.json``
is read), one run's ``<timestamp>`` log dir, or a ``scalars.json`` file.
The picture (default ``WORK_DIR/curves.png``, next to the file when a file is
given) shows the total loss and the last stage's loss terms per logged
iteration, and COCO bbox mAP / AP50 per validation: the same figure as
``tools/demo.py``'s ``curves.png`` (:mod:`lors_det.engine.plots`). It stands
in for mmdet's ``analyze_logs.py plot_curve``, which needs seaborn.
"""
import argparse
import os.path as osp
import sys

from lors_det.engine.plots import find_scalars, plot_curves, read_scalars


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plot loss and val mAP curves from vis_data/scalars.json')
    parser.add_argument(
        'work_dir', help='work dir, run log dir or '
        'scalars.json')
    parser.add_argument(
        '--out', help='output PNG (default: '
        'WORK_DIR/curves.png)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        scalars = find_scalars(args.work_dir)
        train, val = read_scalars(scalars)
        is_file = osp.isfile(args.work_dir)
        out = args.out or osp.join(
            osp.dirname(args.work_dir) if is_file else args.work_dir,
            'curves.png')
        plot_curves(
            train,
            val,
            out,
            title='' if is_file else osp.basename(osp.normpath(args.work_dir)))
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{scalars}: {len(train)} train and {len(val)} val records -> '
          f'{out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
