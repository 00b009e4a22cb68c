# Adapted from mmdetection tools/train.py (v3.3.0), Apache-2.0.
"""Train a detector (mmdet 3.x CLI) with the ``lors_det`` plugin loaded.

Usage is identical to mmdetection's ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [auto|CKPT]] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]
    tools/dist_train.sh CONFIG NUM_GPUS [args]

On machines without CUDA, ``--launcher pytorch|slurm|mpi`` runs CPU DDP over
gloo (see :mod:`lors_det.utils.dist`).
"""
import argparse
import os
import os.path as osp
import sys

# Make `lors_det` importable when run as `python tools/train.py` from a
# checkout that has not been pip-installed.
_REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import lors_det  # noqa: E402,F401  (populates plugin registries)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmdet.utils import (register_all_modules,  # noqa: E402
                         setup_cache_size_limit_of_dynamo)
from lors_det.utils import setup_cpu_dist  # noqa: E402
from lors_det.utils.checkpoint import (  # noqa: E402
    CheckpointError, check_checkpoint_matches_model, load_checkpoint_file,
    register_checkpoint_loader)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
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
    # torch>=2.0's launcher passes `--local-rank`, older ones `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)

    if not osp.isfile(args.config):
        parser.error(f'config file does not exist: {args.config}')
    if args.resume not in (None, 'auto') and '://' not in args.resume \
            and not osp.isfile(args.resume):
        parser.error(f'--resume checkpoint does not exist: {args.resume}')
    return args


def main():
    args = parse_args()
    # Local checkpoints (--resume, load_from) load with lors_det's loader:
    # safe on torch >= 2.6, clear errors for damaged files.
    register_checkpoint_loader()

    # Register mmdet modules; the default scope is initialised by the Runner
    # from `cfg.default_scope`.
    register_all_modules(init_default_scope=False)
    # Reduce the number of repeated compilations and improve training speed.
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

    # enable automatic-mixed-precision training
    if args.amp is True:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    # enable automatically scaling LR
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    # fail on a damaged checkpoint now, not after building data and model
    checkpoint = None
    if cfg.get('load_from') and '://' not in cfg.load_from:
        try:
            checkpoint = load_checkpoint_file(cfg.load_from)
        except (CheckpointError, OSError) as e:
            sys.exit(f'error: {e}')

    setup_cpu_dist(cfg, args.launcher)  # CPU-only DDP over gloo; GPU: no-op

    # build the runner from config
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    # Resuming needs the same architecture: mmengine would load another
    # one's weights partially (warnings only) and then fail inside the
    # optimizer. (load_from without --resume stays non-strict on purpose:
    # fine-tuning from a checkpoint with another head is a normal use.)
    if cfg.get('resume') and checkpoint is not None:
        try:
            check_checkpoint_matches_model(runner.model, checkpoint,
                                           cfg.load_from, config=args.config)
        except CheckpointError as e:
            sys.exit(f'error: {e}')
    del checkpoint

    # start training
    runner.train()


if __name__ == '__main__':
    main()
