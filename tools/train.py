# Adapted from mmdetection tools/train.py (v3.3.0), Apache-2.0.
"""Train a detector (mmdet 3.x CLI) with the ``lors_det`` plugin loaded.

Usage is identical to mmdetection's ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [auto|CKPT]] [--cfg-options k=v ...]
        [--launcher {none,pytorch,slurm,mpi}]
    tools/dist_train.sh CONFIG NUM_GPUS [args]

On machines without CUDA, ``--launcher pytorch|slurm|mpi`` runs CPU DDP over
gloo (see :mod:`lors_det.engine.dist`).

Work is never lost (docs/reliability.md): one live run per work_dir (a lock
file with the pid); without ``--resume`` a work_dir that holds checkpoints
is refused; ``--resume`` takes the newest checkpoint that loads when
``last_checkpoint`` is missing, empty or stale; the checkpoint's weights are
checked against the model (tensors, finite, shapes, dtypes) before training.
"""
import argparse
import atexit
import os
import os.path as osp
import sys

import torch
from mmdet.utils import register_all_modules, setup_cache_size_limit_of_dynamo
from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import lors_det  # noqa: F401  (populates plugin registries)
from lors_det.engine.checkpoint import (CheckpointError, load_checkpoint_file,
                                        read_once)
from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.dist import setup_cpu_dist
from lors_det.engine.fileio import WorkDirBusyError, WorkDirLock
from lors_det.engine.optim_wrappers import to_amp
from lors_det.engine.resume import (ResumeError, find_resume_checkpoint,
                                    refuse_fresh_start)
from lors_det.engine.weights import check_checkpoint
from lors_det.lors.checks import check_bool


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

    if args.resume not in (None, 'auto') and '://' not in args.resume \
            and not osp.isfile(args.resume):
        parser.error(f'--resume checkpoint does not exist: {args.resume}')
    return args


def _is_main_process() -> bool:
    rank = os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0'))
    return rank == '0'


def prepare_work_dir(cfg, resume):
    """Lock ``cfg.work_dir``, choose what to load, and read it.

    Sets ``cfg.resume``/``cfg.load_from``; returns the loaded checkpoint
    (None when nothing is loaded).
    """
    if _is_main_process():
        lock = WorkDirLock(cfg.work_dir)
        lock.acquire()
        atexit.register(lock.release)
    if resume == 'auto':
        path, checkpoint = find_resume_checkpoint(cfg.work_dir)
        if path is None:
            print(f'no checkpoint in {cfg.work_dir}: starting from scratch')
        cfg.resume, cfg.load_from = path is not None, path
        return checkpoint
    if resume is not None:
        cfg.resume, cfg.load_from = True, resume
    else:
        refuse_fresh_start(cfg.work_dir)
    if cfg.get('load_from') and '://' not in cfg.load_from:
        return load_checkpoint_file(cfg.load_from)
    return None


def main():
    args = parse_args()
    # Register mmdet modules; the default scope is initialised by the Runner
    # from `cfg.default_scope`.
    register_all_modules(init_default_scope=False)
    # Reduce the number of repeated compilations and improve training speed.
    setup_cache_size_limit_of_dynamo()

    # load config (`lors_det::...` names too; a bad one is one error line)
    with config_errors(args.config):
        cfg = load_tool_config(args.config, args.cfg_options)
        check_bool('resume', cfg.get('resume', False))
    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training
    if args.amp is True:
        if not torch.cuda.is_available():
            sys.exit('error: --amp needs a CUDA GPU (mmengine\'s '
                     'AmpOptimWrapper is CUDA-only); train without --amp '
                     'on this machine (float32)')
        # the non-finite guard keeps its options, as its AMP variant
        to_amp(cfg.optim_wrapper)

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

    try:
        checkpoint = prepare_work_dir(cfg, args.resume)
    except (CheckpointError, OSError, ResumeError, WorkDirBusyError,
            ValueError) as e:
        sys.exit(f'error: {e}')

    setup_cpu_dist(cfg, args.launcher)  # CPU-only DDP over gloo; GPU: no-op

    # build the runner from config
    with config_errors(args.config):
        if 'runner_type' not in cfg:
            runner = Runner.from_cfg(cfg)
        else:
            runner = RUNNERS.build(cfg)

    # Weights that cannot be right stop the run here (non-tensors, NaN/Inf,
    # shape or dtype); resuming also needs every weight of the model
    # (mmengine would load another architecture partially, with warnings
    # only). load_from without --resume may miss weights (fine-tuning with
    # another head).
    if checkpoint is None:
        runner.train()
        return
    try:
        check_checkpoint(
            runner.model,
            checkpoint,
            cfg.load_from,
            require_all=cfg.resume,
            config=args.config)
    except CheckpointError as e:
        sys.exit(f'error: {e}')
    # the runner loads (or resumes from) the checkpoint read above, not the
    # file again
    with read_once(cfg.load_from, checkpoint):
        del checkpoint
        runner.train()


if __name__ == '__main__':
    main()
