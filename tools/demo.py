"""End-to-end CPU demo (``make demo``): synthetic data -> train -> COCO eval.

Writes the dataset with ``make_synthetic_coco(data_root,
**cfg.synthetic_data)``, trains the config (default: the demo config, which
holds the schedule, data root, dataset size and seed) with mmengine's
``Runner``, tests the final model on the val split with the config's
CocoMetric and prints the COCO summary and count_params.py's table.
Options override the config (``--epochs`` scales epoch-based milestones);
``--quick`` is a smoke run (``QUICK_OPTIONS``, data in ``WORK_DIR/data``).
``WORK_DIR`` gets the checkpoints, logs, merged config, ``val.bbox.json``
(the test's predictions), ``results.json`` (metrics, val history, parameter
counts, wall times, settings), ``curves.png`` and ``detections.png``
(:mod:`lors_det.engine.plots`).
"""
import argparse
import contextlib
import io
import json
import os
import os.path as osp
import subprocess
import sys
import time

import torch
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.runner import Runner

from lors_det.datasets import make_synthetic_coco
from lors_det.engine.config_scope import (ConfigError, config_errors,
                                          resolve_config_path)
from lors_det.engine.fileio import WorkDirLock
from lors_det.engine.plots import (find_scalars, plot_curves, plot_detections,
                                   read_scalars)
from lors_det.models.param_counts import json_summary, model_param_counts

# the installed package's copy, so the demo runs from any directory
DEFAULT_CONFIG = 'lors_det::synthetic/adamixer-lors_tiny_synthetic_demo.py'
COUNT_PARAMS = osp.join(
    osp.dirname(osp.abspath(__file__)), 'analysis', 'count_params.py')
# --quick: one epoch of 2 iterations on 8 images of 64 px, then validation
QUICK_OPTIONS = {
    'synthetic_data':
    dict(num_train=8, num_val=4, img_size=64),
    'train_cfg':
    dict(max_epochs=1, val_interval=1),
    'default_hooks':
    dict(logger=dict(interval=1), checkpoint=dict(interval=1)),
    'param_scheduler':
    [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train + evaluate AdaMixer+LORS '
                                'on synthetic shapes (CPU demo)')
    p.add_argument(
        '--config',
        default=DEFAULT_CONFIG,
        help='a path or lors_det::path/in/configs.py')
    p.add_argument(
        '--work-dir',
        help='default: work_dirs/demo '
        '(work_dirs/demo_quick with --quick)')
    p.add_argument(
        '--epochs',
        type=int,
        help="the config's max_epochs "
        '(epoch-based LR milestones are scaled with it)')
    p.add_argument(
        '--quick',
        action='store_true',
        help='smoke run: tiny '
        'dataset in WORK_DIR/data, one epoch of 2 iterations')
    p.add_argument('--data-root', help="default: the config's")
    for name in ('num-train', 'num-val', 'img-size', 'seed'):
        p.add_argument(
            f'--{name}',
            type=int,
            help="default: the config's "
            'synthetic_data (--seed: also randomness.seed)')
    p.add_argument(
        '--threads',
        type=int,
        help='torch threads (default: '
        'OMP_NUM_THREADS, else all cores, 1 if busy or --quick)')
    p.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help='score threshold of detections.png')
    p.add_argument(
        '--num-vis', type=int, default=8, help='val images in detections.png')
    args = p.parse_args(argv)
    try:
        args.config_file = resolve_config_path(args.config)
    except ConfigError as e:
        p.error(str(e))
    if args.epochs is not None and args.epochs <= 0:
        p.error(f'--epochs must be positive, got {args.epochs}')
    args.work_dir = args.work_dir or ('work_dirs/demo_quick'
                                      if args.quick else 'work_dirs/demo')
    return args


def default_threads(quick: bool) -> int:
    """OMP_NUM_THREADS, else all cores unless other jobs keep them busy: on
    2 cores under a load of ~8, 1 thread runs 2.6x faster than 2 (OpenMP
    threads wait for busy cores in the decoder's many small ops)."""
    if os.environ.get('OMP_NUM_THREADS', '').isdigit():
        return max(1, int(os.environ['OMP_NUM_THREADS']))
    cores = os.cpu_count() or 1
    return 1 if quick or os.getloadavg()[0] > cores - 0.5 else cores


def scale_epochs(schedulers, old: int, new: int) -> list:
    """``schedulers`` with epoch-based milestones / ends moved from ``old``
    to ``new`` epochs."""
    out = [dict(s) for s in schedulers]
    for s in (s for s in out if s.get('by_epoch', True)):
        if 'milestones' in s:
            s['milestones'] = sorted({
                min(new, max(1, round(m * new / old)))
                for m in s['milestones']
            })
        s['end'] = new if s.get('end') == old else s.get('end')
    return out


def build_cfg(args) -> Config:
    """The config with the command line's overrides merged in."""
    cfg = Config.fromfile(args.config_file)
    cfg.merge_from_dict(QUICK_OPTIONS if args.quick else {})
    # the test's predictions (for detections.png) go to PREFIX.bbox.json
    opts = {
        'work_dir': args.work_dir,
        'launcher': 'none',
        'test_evaluator.outfile_prefix': osp.join(args.work_dir, 'val')
    }
    if args.epochs:
        train_cfg, e = cfg.train_cfg, args.epochs
        opts.update({
            'train_cfg.max_epochs':
            e,
            'train_cfg.val_interval':
            min(e, train_cfg.get('val_interval', 1)),
            'default_hooks.checkpoint.interval':
            e,
            'param_scheduler':
            scale_epochs(cfg.param_scheduler, train_cfg.max_epochs, e)
        })
    if args.data_root or args.quick:
        root = osp.abspath(args.data_root or osp.join(args.work_dir, 'data'))
        for split in ('train', 'val', 'test'):
            opts[f'{split}_dataloader.dataset.data_root'] = root + '/'
        for split in ('val', 'test'):
            opts[f'{split}_evaluator.ann_file'] = osp.join(
                root, 'annotations', 'instances_val.json')
    for key in ('num_train', 'num_val', 'img_size', 'seed'):
        if getattr(args, key) is not None:
            opts[f'synthetic_data.{key}'] = getattr(args, key)
    if args.seed is not None:
        opts['randomness.seed'] = args.seed
    cfg.merge_from_dict(opts)
    return cfg


def check_classes(cfg: Config, ann_file: str) -> None:
    """Raise unless the config's classes are the generated categories."""
    with open(ann_file) as f:
        names = tuple(c['name'] for c in json.load(f)['categories'])
    classes = cfg.train_dataloader.dataset.get('metainfo', {}).get('classes')
    if classes is None or tuple(classes) != names:
        raise ValueError(f'{cfg.filename}: train_dataloader.dataset.metainfo.'
                         f'classes is {classes!r}, but the generated '
                         f'{ann_file} holds {names}')


def run(args, cfg: Config) -> dict:
    start, cpu_start = time.time(), time.process_time()
    threads = args.threads or default_threads(args.quick)
    torch.set_num_threads(threads)
    data, val_set = cfg.get('synthetic_data', {}), cfg.test_dataloader.dataset
    print(
        f'[demo] {threads} thread(s); make_synthetic_coco('
        f'{val_set.data_root!r}, {data})',
        flush=True)
    check_classes(
        cfg,
        make_synthetic_coco(val_set.data_root, **data)['val_ann_file'])
    register_all_modules(init_default_scope=False)
    with config_errors(args.config):  # a bad model option: one line
        runner = Runner.from_cfg(cfg)
    runner.train()
    train_end = time.time()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # pycocotools prints its summary
        metrics = {k: float(v) for k, v in runner.test().items()}
    print(buf.getvalue(), end='')
    summary = [
        ln for ln in buf.getvalue().splitlines()
        if ln.lstrip().startswith(('Average Precision', 'Average Recall'))
    ][-12:]
    table = subprocess.run([sys.executable, COUNT_PARAMS, args.config],
                           check=True,
                           stdout=subprocess.PIPE,
                           text=True).stdout.strip()
    files = {
        name: osp.join(args.work_dir, name)
        for name in ('results.json', 'curves.png', 'detections.png',
                     'val.bbox.json')
    }
    train_recs, val_recs = read_scalars(find_scalars(runner.log_dir))
    plot_curves(train_recs, val_recs, files['curves.png'])
    plot_detections(cfg.test_evaluator.ann_file,
                    osp.join(val_set.data_root,
                             val_set.data_prefix.img), files['val.bbox.json'],
                    args.score_thr, files['detections.png'], args.num_vis)
    loop = runner.train_loop
    wall = dict(
        total=time.time() - start,
        train=train_end - start,
        process_cpu=time.process_time() - cpu_start)  # ~ 1 thread
    results = dict(
        metrics=metrics,
        params=json_summary(model_param_counts(runner.model)),
        val_history=[{
            k: v
            for k, v in r.items() if k.startswith('coco/') or k == 'step'
        } for r in val_recs],
        wall_time_s={k: round(v, 1)
                     for k, v in wall.items()},
        coco_summary=summary,
        param_table=table,
        files=dict(files, log_dir=runner.log_dir),
        config=dict(
            file=args.config,
            data_root=val_set.data_root,
            dataset=data,
            max_epochs=loop.max_epochs,
            iters_per_epoch=len(loop.dataloader),
            threads=threads,
            quick=args.quick,
            torch=torch.__version__))
    with open(files['results.json'], 'w') as f:
        json.dump(results, f, indent=2)
    ap = [metrics[f'coco/bbox_mAP{k}'] for k in ('', '_50', '_75')]
    print('\n'.join([
        '=' * 78, f'AdaMixer+LORS demo: {args.config}',
        f'val split: {len(runner.test_dataloader.dataset)} images '
        f'({val_set.data_root}); {loop.max_epochs} epochs x '
        f'{len(loop.dataloader)} iterations on {threads} CPU thread(s); '
        f"wall time {wall['total']:.0f} s (train {wall['train']:.0f} s, "
        f"process CPU {wall['process_cpu']:.0f} s)", '-' * 78,
        'COCO bbox evaluation (pycocotools):', *summary, '-' * 78,
        'parameters:', table, '-' * 78,
        'bbox mAP {:.3f}  AP50 {:.3f}  AP75 {:.3f}'.format(*ap), 'wrote ' +
        ', '.join(files[k]
                  for k in ('results.json', 'curves.png', 'detections.png')),
        '=' * 78
    ]))
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    with config_errors(args.config):
        cfg = build_cfg(args)
    with WorkDirLock(args.work_dir):
        run(args, cfg)


if __name__ == '__main__':
    main()
