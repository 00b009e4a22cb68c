"""Generate the synthetic shapes dataset (COCO format) used by the demo/tests.

Usage:
    python tools/misc/make_synthetic_coco.py [--out data/synthetic]
        [--preset shapes] [--num-train 64] [--num-val 16] [--img-size 128]
        [--seed 0] [--max-objects 4] [--force]

``--preset hard`` makes the harder data of the proxy study (9 colour x shape
classes, 8-96 px objects on 256 px images, occlusion and clutter; defaults
1024 train / 256 val images, up to 12 objects);
see ``lors_det/datasets/synthetic_coco.py``. Sizes not given take the
preset's defaults.

The settings are stored in ``OUT/meta.json``; if the output already exists
with the same settings nothing is regenerated unless ``--force`` is given.
"""
import argparse
import json
import os
import os.path as osp
import sys

from lors_det.datasets import make_synthetic_coco
from lors_det.datasets.synthetic_coco import PRESETS


def parse_args():
    parser = argparse.ArgumentParser(
        description='Generate a small synthetic COCO-format shapes dataset.')
    parser.add_argument(
        '--out',
        default='data/synthetic',
        help='output root (default: data/synthetic)')
    parser.add_argument(
        '--preset',
        choices=sorted(PRESETS),
        default='shapes',
        help='shapes (3 classes, default) or hard (9 '
        'classes, clutter, occlusion, 256 px)')
    parser.add_argument(
        '--num-train', type=int, help='default: 64 (shapes), 1024 (hard)')
    parser.add_argument(
        '--num-val', type=int, help='default: 16 (shapes), 256 (hard)')
    parser.add_argument(
        '--img-size',
        type=int,
        help='square image side in pixels (>= 32); '
        'default: 128 (shapes), 256 (hard)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--max-objects', type=int, help='default: 4 (shapes), 12 (hard)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='regenerate even if the output is up to date')
    return parser.parse_args()


def is_up_to_date(out, settings):
    """Whether ``out`` holds a complete dataset made with ``settings``."""
    meta_file = osp.join(out, 'meta.json')
    anns = [
        osp.join(out, 'annotations', f'instances_{s}.json')
        for s in ('train', 'val')
    ]
    if not all(osp.isfile(f) for f in [meta_file] + anns):
        return False
    with open(meta_file) as f:
        try:
            return json.load(f) == settings
        except ValueError:
            return False


def main():
    args = parse_args()
    given = dict(
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=args.img_size,
        seed=args.seed,
        max_objects=args.max_objects)
    settings = {
        k: PRESETS[args.preset][k] if v is None else v
        for k, v in given.items()
    }
    if args.preset != 'shapes':  # meta.json of default data stays as it was
        settings['preset'] = args.preset
    if not args.force and is_up_to_date(args.out, settings):
        print(f'{args.out} is up to date ({settings}); '
              'use --force to regenerate.')
        return
    meta_file = osp.join(args.out, 'meta.json')
    if osp.exists(meta_file):  # an interrupted run must not look finished
        os.remove(meta_file)
    try:
        paths = make_synthetic_coco(args.out, **settings)
    except ValueError as err:
        sys.exit(f'error: {err}')
    with open(meta_file, 'w') as f:
        json.dump(settings, f, indent=2, sort_keys=True)
    print(f'Wrote synthetic COCO dataset to {args.out} ({settings}):')
    for split in ('train', 'val'):
        with open(paths[f'{split}_ann_file']) as f:
            coco = json.load(f)
        print(f"  {paths[f'{split}_img_dir']}/: {len(coco['images'])} "
              f"images, {len(coco['annotations'])} boxes -> "
              f"{paths[f'{split}_ann_file']}")
    print(f'  {meta_file}')


if __name__ == '__main__':
    main()
