# Adapted from mmdetection tools/test.py (v3.3.0), Apache-2.0.
"""Test (and evaluate) a detector (mmdet 3.x CLI) with ``lors_det`` loaded.

Usage is identical to mmdetection's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show] [--show-dir DIR] [--wait-time S] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}] [--tta]
    tools/dist_test.sh CONFIG CHECKPOINT NUM_GPUS [args]

On machines without CUDA, ``--launcher pytorch|slurm|mpi`` runs CPU DDP over
gloo (see :mod:`lors_det.engine.dist`).

The checkpoint is read once, before anything is built, and checked against
the model before it is loaded (:mod:`lors_det.engine.checkpoint`: no code
execution, every weight present, tensors, finite, same shapes and dtypes);
the runner does not read it again. ``--merge-lors`` then merges LORS
(:mod:`lors_det.models.deploy`).
"""
import argparse
import logging
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.registry import RUNNERS
from mmdet.utils import register_all_modules, setup_cache_size_limit_of_dynamo
from mmengine import ConfigDict
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

import lors_det  # noqa: F401  (populates plugin registries)
from lors_det.engine.checkpoint import CheckpointError, load_checkpoint_file
from lors_det.engine.dist import setup_cpu_dist
from lors_det.engine.weights import load_into_runner
from lors_det.models.deploy import lors_stacks, merge_lors


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--tta', action='store_true')
    parser.add_argument(
        '--merge-lors',
        action='store_true',
        help='fold LORSA and LORST into dense per-stage weights before '
        'inference (same outputs, AdaMixer\'s cost per stage): '
        'model.merge_lors() after the weights are loaded')
    # torch>=2.0's launcher passes `--local-rank`, older ones `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    if not osp.isfile(args.config):
        parser.error(f'config file does not exist: {args.config}')
    # Remote checkpoints (http://, s3://, ...) are left to mmengine.
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file does not exist: {args.checkpoint}')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must be a .pkl/.pickle file, got: {args.out}')
    return args


def main():
    args = parse_args()

    # A damaged or unsafe checkpoint fails here, before anything is built;
    # this is the one read of a local checkpoint (loaded below, checked).
    checkpoint = None
    if '://' not in args.checkpoint:
        try:
            checkpoint = load_checkpoint_file(args.checkpoint)
        except (CheckpointError, OSError, ValueError) as e:
            sys.exit(f'error: {e}')

    # Register mmdet modules; the default scope is initialised by the Runner
    # from `cfg.default_scope`.
    register_all_modules(init_default_scope=False)
    # Reduce the number of repeated compilations and improve testing speed.
    setup_cache_size_limit_of_dynamo()

    # load config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # remote checkpoints are left to mmengine's loading in runner.test()
    cfg.load_from = args.checkpoint if checkpoint is None else None

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        if 'tta_model' not in cfg:
            warnings.warn('Cannot find ``tta_model`` in config, '
                          'we will set it as default.')
            cfg.tta_model = dict(
                type='DetTTAModel',
                tta_cfg=dict(
                    nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if 'tta_pipeline' not in cfg:
            warnings.warn('Cannot find ``tta_pipeline`` in config, '
                          'we will set it as default.')
            test_data_cfg = cfg.test_dataloader.dataset
            while 'dataset' in test_data_cfg:
                test_data_cfg = test_data_cfg['dataset']
            cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
            flip_tta = dict(
                type='TestTimeAug',
                transforms=[
                    [
                        dict(type='RandomFlip', prob=1.),
                        dict(type='RandomFlip', prob=0.)
                    ],
                    [
                        dict(
                            type='PackDetInputs',
                            meta_keys=('img_id', 'img_path', 'ori_shape',
                                       'img_shape', 'scale_factor', 'flip',
                                       'flip_direction'))
                    ],
                ])
            cfg.tta_pipeline[-1] = flip_tta
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline

    setup_cpu_dist(cfg, args.launcher)  # CPU-only DDP over gloo; GPU: no-op

    # build the runner from config
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    # A checkpoint of another architecture, or with weights that cannot be
    # right, would otherwise load partially (mmengine only warns) and be
    # evaluated with random weights. Loaded from the one read.
    if checkpoint is not None:
        try:
            load_into_runner(
                runner, checkpoint, args.checkpoint, config=args.config)
        except CheckpointError as e:
            sys.exit(f'error: {e}')
        del checkpoint
    if args.merge_lors:
        model = runner.model
        while hasattr(model, 'module'):  # DDP / TTA wrappers
            model = model.module
        if not lors_stacks(model):
            # nothing to fold: the config has no LORS layer
            print_log(
                f'--merge-lors: {args.config} has no LORS layer '
                '(decoder.mixing.lorsa / lorst unset); evaluating it as is',
                logger='current',
                level=logging.WARNING)
        else:
            if cfg.load_from is not None:  # remote: load now, then merge
                runner.load_checkpoint(args.checkpoint, map_location='cpu')
            try:
                num_stacks = merge_lors(model)
            except ValueError as e:  # non-finite merged weights
                sys.exit(f'error: --merge-lors: {e}')
            print_log(
                f'--merge-lors: merged {num_stacks} LORS stacks into '
                'dense per-stage weights',
                logger='current')

    # add `DumpResults` dummy metric
    if args.out is not None:
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))

    # start testing
    runner.test()


if __name__ == '__main__':
    main()
