"""Shared helpers of the reliability tests: tiny derived configs of the
shipped synthetic configs, running the tools as subprocesses, reading the
logged losses."""
import glob
import json
import os
import os.path as osp
import signal
import time

import pytest
from tool_runner import finish, popen, tool_env  # noqa: F401  (re-exported)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
ADAMIXER_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                        'adamixer_tiny_synthetic.py')
LORS_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                    'adamixer-lors_tiny_synthetic.py')
CLASSES = ('circle', 'square', 'triangle')

MAX_ITERS = 4
CKPT_INTERVAL = 2
TIMEOUT_S = 300

# The shipped synthetic config, shrunk for a CPU test (64 px images,
# ResNet-18 with 16 base channels, 2 decoder stages, 10 queries), trained
# iteration-based with a deterministic data order (seeded InfiniteSampler, no
# random flip), a checkpoint every CKPT_INTERVAL iterations and the loss of
# every iteration logged (window 1). Everything else, including the dataset
# type (CheckedCocoDataset) and the checkpoint hook (AtomicCheckpointHook),
# comes from the shipped config.
TINY_CFG = """
_base_ = [{base!r}]
data_root = {data_root!r}
img_scale = (64, 64)
model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128]),
    query_generator=dict(num_queries=10),
    decoder=dict(num_stages=2, stage_loss_weights=[1.0, 1.0]{mixing}))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = dict(
    batch_size=2, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters={max_iters})
# the shipped schedule's shape: MultiStepLR pickles a Counter, which the
# safe checkpoint loader must accept
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=False, milestones=[1000], gamma=0.1)
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval={ckpt_interval}, by_epoch=False))
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0, deterministic=True)
"""
LORS_MIXING = (",\n    mixing=dict(lorsa=dict(rank=8, num_factors=[1, 2]), "
               "lorst=dict(rank=4, num_factors=1))")


def write_tiny_config(path, data_root, lors=False, max_iters=MAX_ITERS,
                      ckpt_interval=CKPT_INTERVAL, extra=''):
    text = TINY_CFG.format(
        base=LORS_CFG if lors else ADAMIXER_CFG,
        data_root=str(data_root).rstrip('/') + '/',
        mixing=LORS_MIXING if lors else '',
        max_iters=max_iters,
        ckpt_interval=ckpt_interval) + extra
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def run(cmd, env=None, check=True):
    """Run ``cmd`` from the repo root, output captured."""
    return finish(popen(cmd, env), cmd, check)


def wait_for(path, proc, timeout=TIMEOUT_S):
    """Wait until ``path`` exists; fail if ``proc`` ends first."""
    t0 = time.time()
    while not osp.exists(path):
        if proc.poll() is not None:
            out = proc.stdout.read()
            pytest.fail(f'process ended (exit {proc.returncode}) before '
                        f'{path} appeared:\n{out[-6000:]}')
        if time.time() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f'{path} did not appear within {timeout}s')
        time.sleep(0.05)


def losses_by_run(work_dir):
    """``[{iter: {key: value}}]``, one dict per run (timestamped log dir)
    in ``work_dir``, oldest first, from ``vis_data/scalars.json``."""
    runs = []
    for path in sorted(
            glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        per_iter = {}
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec:
                    per_iter[rec['iter']] = {
                        k: v
                        for k, v in rec.items() if 'loss' in k
                    }
        runs.append(per_iter)
    return runs
