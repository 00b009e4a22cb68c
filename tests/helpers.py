"""The tests' helpers (imported as a module: ``from helpers import ...``).

* tiny models and batches built from the shipped configs (``build_model``,
  ``make_batch``), the tiny training config the tool runs use
  (``write_tiny_config``);
* running a tool as a subprocess like a user would (from the repo root, on
  CPU), with a hard timeout that kills the whole process group (torchrun and
  its workers included): ``run``, ``popen``, ``finish``, ``tool_env``;
* reading what a run logged (``losses_by_run``), waiting for a file.
"""
import glob
import json
import math
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
TIMEOUT_S = 300

SYNTHETIC = {
    'adamixer': 'configs/synthetic/adamixer_tiny_synthetic.py',
    'lors': 'configs/synthetic/adamixer-lors_tiny_synthetic.py',
}
ADAMIXER_CFG = os.path.join(REPO_ROOT, SYNTHETIC['adamixer'])
LORS_CFG = os.path.join(REPO_ROOT, SYNTHETIC['lors'])
# the tiny tool runs: iterations, checkpoint interval
MAX_ITERS = 4
CKPT_INTERVAL = 2


def load_config(rel_path: str) -> Config:
    return Config.fromfile(os.path.join(REPO_ROOT, rel_path))


def build_model(rel_path: str, **decoder_overrides):
    from mmdet.registry import MODELS
    cfg = load_config(rel_path)
    cfg.model.decoder.update(decoder_overrides)
    return MODELS.build(cfg.model)


def make_batch(num_images=2, size=64, num_gts=(2, 0), num_classes=3, seed=0):
    """Random images with random boxes; ``num_gts[i]`` objects in image i."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_images, 3, size, size, generator=g)
    samples = []
    for i in range(num_images):
        n = num_gts[i % len(num_gts)]
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = torch.rand(n, 2, generator=g) * size * 0.3 + 4
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size * 2, size * 2),
                pad_shape=(size, size),
                scale_factor=(0.5, 0.5),
                batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1),
            labels=torch.randint(0, num_classes, (n, ), generator=g))
        samples.append(sample)
    return inputs, samples


def assert_xavier_uniform(weight: torch.Tensor) -> None:
    """``weight`` (out, in) looks drawn from Xavier-uniform: inside the
    bound sqrt(6 / (in + out)) and with its standard deviation (within 10%),
    which ``nn.Linear``'s default init (bound 1 / sqrt(in)) does not have
    unless out is about 5 * in."""
    out_features, in_features = weight.shape
    bound = math.sqrt(6.0 / (in_features + out_features))
    assert weight.abs().max() <= bound
    std = weight.detach().double().std().item()
    assert abs(std / (bound / math.sqrt(3.0)) - 1) < 0.1, (std, bound)


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
    decoder=dict(num_stages=2{mixing}))
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
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
{validation}
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

NO_VALIDATION = """val_dataloader = None
val_cfg = None
val_evaluator = None
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters={max_iters})"""
# one validation, at the end of training
FINAL_VALIDATION = """val_dataloader = test_dataloader
val_evaluator = test_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters={max_iters}, val_interval={max_iters})"""


def write_tiny_config(path,
                      data_root,
                      lors=False,
                      max_iters=MAX_ITERS,
                      ckpt_interval=CKPT_INTERVAL,
                      validate=False,
                      extra=''):
    """Write the tiny config (see ``TINY_CFG``) to ``path``; returns the
    path. ``validate``: one COCO validation after the last iteration."""
    validation = FINAL_VALIDATION if validate else NO_VALIDATION
    text = TINY_CFG.format(
        base=LORS_CFG if lors else ADAMIXER_CFG,
        data_root=str(data_root).rstrip('/') + '/',
        mixing=LORS_MIXING if lors else '',
        validation=validation.format(max_iters=max_iters),
        ckpt_interval=ckpt_interval) + extra
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def tool_env(extra_pythonpath=()) -> dict:
    """This environment, with no GPU, one intra-op thread (on a shared
    2-core machine two spinning OpenMP threads per process make every step
    many times slower), the repo first on PYTHONPATH, ``$PYTHON`` for
    tools/dist_*.sh, and the checkpoint trust switch removed."""
    env = dict(os.environ)
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = '1'
    env['PYTHON'] = sys.executable
    paths = [REPO_ROOT, *map(str, extra_pythonpath)]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env.pop('LORS_DET_TRUST_CHECKPOINTS', None)
    return env


def popen(cmd, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env or tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True)


def finish(proc: subprocess.Popen,
           cmd,
           check=True,
           timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    """Wait for a :func:`popen` process; fail the test on timeout or, with
    ``check``, on a non-zero exit, showing the output's tail."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'timed out after {timeout}s: {cmd}\n{out[-6000:]}')
    if check and proc.returncode != 0:
        pytest.fail(f'exit code {proc.returncode}: {cmd}\n{out[-6000:]}')
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def run(cmd,
        env=None,
        check=True,
        timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    return finish(popen(cmd, env), cmd, check=check, timeout=timeout)


CLASSES = ('circle', 'square', 'triangle')


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
