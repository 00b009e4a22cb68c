"""Interrupted training loses nothing.

* End to end (``tools/train.py``, the tiny AdaMixer config): a run is
  SIGKILLed in the middle of writing a checkpoint; the previous checkpoint
  stays intact and ``last_checkpoint`` points at it; ``--resume`` continues
  from it with the same losses as an uninterrupted run and ends at the same
  iteration with the same weights.
* In process (toy model, mmengine Runner): a save that fails half-way
  (``torch.save`` crashing, or the disk filling up during the write) leaves
  the previous checkpoint intact and loadable, also with
  ``max_keep_ckpts=1`` and for ``save_best`` checkpoints, where mmengine's
  own ``CheckpointHook`` deletes the previous file first (shown as the
  baseline).
"""
import builtins
import errno
import os
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from helpers import CKPT_INTERVAL, MAX_ITERS, TRAIN, losses_by_run, run
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from lors_det.engine.checkpoint import CheckpointError, load_checkpoint_file
from lors_det.engine.fileio import PARTIAL_SUFFIX, atomic_write_bytes

LOSS_RTOL = 1e-5


# ---------------------------------------------------------------------------
# end to end: SIGKILL while saving, then --resume
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(
        interrupted_run):
    r = interrupted_run
    assert r['returncode'] == -9, r['output'][-3000:]  # SIGKILL
    work_dir = r['work_dir']
    prev = osp.join(work_dir, f'iter_{CKPT_INTERVAL}.pth')
    # the half-written file never got the checkpoint's name ...
    assert f'iter_{MAX_ITERS}.pth' not in r['files'], r['files']
    assert r['partial_size'] and r['partial_size'] > 0
    # ... the pointer still names the previous checkpoint, which loads
    assert r['last_checkpoint'] == prev
    ckpt = load_checkpoint_file(prev)
    assert ckpt['meta']['iter'] == CKPT_INTERVAL
    # and the killed run got as far as logging iteration MAX_ITERS
    assert sorted(losses_by_run(work_dir)[0]) == list(range(1, MAX_ITERS + 1))


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(interrupted_run,
                                                     reference_run,
                                                     tiny_config):
    work_dir = interrupted_run['work_dir']
    proc = run([
        sys.executable, TRAIN, tiny_config, '--work-dir', work_dir, '--resume'
    ])
    assert f'resumed epoch: 0, iter: {CKPT_INTERVAL}' in proc.stdout
    # the partial file of the killed save was cleaned up
    assert not any(f.endswith(PARTIAL_SUFFIX) for f in os.listdir(work_dir))

    full = losses_by_run(reference_run)[0]
    resumed = losses_by_run(work_dir)[-1]
    assert sorted(full) == list(range(1, MAX_ITERS + 1))
    assert sorted(resumed) == list(range(CKPT_INTERVAL + 1, MAX_ITERS + 1))
    for it, losses in resumed.items():
        assert losses.keys() == full[it].keys()
        for key, value in losses.items():
            assert value == pytest.approx(full[it][key], rel=LOSS_RTOL), \
                (it, key)

    a = load_checkpoint_file(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))
    b = load_checkpoint_file(osp.join(reference_run, f'iter_{MAX_ITERS}.pth'))
    assert a['meta']['iter'] == b['meta']['iter'] == MAX_ITERS
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in b['state_dict']:
        torch.testing.assert_close(
            a['state_dict'][k],
            b['state_dict'][k],
            rtol=1e-4,
            atol=1e-6,
            msg=k)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read() == osp.join(work_dir, f'iter_{MAX_ITERS}.pth')


# ---------------------------------------------------------------------------
# in process: a save that fails half-way
# ---------------------------------------------------------------------------
class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - 1)**2).mean())
        if mode == 'predict':
            return [dict(out=o) for o in out]
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('x', ))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(2, generator=g))


class IterMetric(BaseMetric):
    """'acc' grows with every validation: every validation is a new best."""
    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        IterMetric.calls += 1
        return dict(acc=float(IterMetric.calls))


class FaultAtSave(Hook):
    """Make the save of the file named ``target`` fail half-way."""

    def __init__(self, monkeypatch, target, how):
        self.mp, self.target, self.how = monkeypatch, target, how

    def before_save_checkpoint(self, runner, checkpoint):
        target = self.target
        if self.how == 'torch_save':
            # mmengine serialises into memory first: make that crash after
            # it wrote part of the bytes (only for the target checkpoint)
            if checkpoint['meta']['iter'] != int(
                    target.split('_')[-1].split('.')[0]):
                return

            def crashing_save(obj, f, *args, **kwargs):
                f.write(b'PK\x03\x04 partial bytes')
                raise RuntimeError('simulated crash inside torch.save')

            self.mp.setattr(torch, 'save', crashing_save)
        else:  # the disk fills up while the file is being written
            real_open = builtins.open

            class HalfThenENOSPC:

                def __init__(self, f):
                    self.f = f

                def write(self, data):
                    self.f.write(data[:len(data) // 2])
                    self.f.flush()
                    raise OSError(errno.ENOSPC, 'No space left on device')

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return self.f.__exit__(*exc)

                def __getattr__(self, name):
                    return getattr(self.f, name)

            def patched(file, mode='r', *args, **kwargs):
                f = real_open(file, mode, *args, **kwargs)
                if 'w' in mode and osp.basename(str(file)).startswith(target):
                    return HalfThenENOSPC(f)
                return f

            self.mp.setattr(builtins, 'open', patched)


def _toy_runner(work_dir,
                hook_type,
                custom_hooks=(),
                save_best=None,
                max_keep_ckpts=1,
                max_iters=4):
    val = {}
    if save_best:
        val = dict(
            val_dataloader=dict(
                dataset=ToyDataset(),
                sampler=dict(type='DefaultSampler', shuffle=False),
                batch_size=4,
                collate_fn=dict(type='default_collate')),
            val_cfg=dict(),
            val_evaluator=Evaluator([IterMetric()]))
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{hook_type}_{osp.basename(str(work_dir))}',
        default_scope='mmdet',
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(
            by_epoch=False,
            max_iters=max_iters,
            val_interval=CKPT_INTERVAL if save_best else 1000),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=100),
            checkpoint=dict(
                type=hook_type,
                interval=CKPT_INTERVAL,
                by_epoch=False,
                max_keep_ckpts=max_keep_ckpts,
                save_best=save_best,
                rule='greater' if save_best else None)),
        custom_hooks=list(custom_hooks),
        randomness=dict(seed=0),
        **val)


def _loadable(path):
    try:
        return load_checkpoint_file(path)['meta']['iter']
    except (CheckpointError, OSError):
        return None


@pytest.mark.parametrize('how', ['torch_save', 'disk_full'])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, how):
    runner = _toy_runner(
        tmp_path, 'AtomicCheckpointHook',
        [FaultAtSave(monkeypatch, f'iter_{MAX_ITERS}.pth', how)])
    with pytest.raises((RuntimeError, OSError)):
        runner.train()  # the failure is not swallowed: the run stops
    monkeypatch.undo()
    files = sorted(os.listdir(tmp_path))
    prev = osp.join(tmp_path, f'iter_{CKPT_INTERVAL}.pth')
    assert f'iter_{MAX_ITERS}.pth' not in files
    assert not [f for f in files if f.endswith(PARTIAL_SUFFIX)]
    assert _loadable(prev) == CKPT_INTERVAL
    assert (tmp_path / 'last_checkpoint').read_text() == prev


@pytest.mark.parametrize('how', ['torch_save', 'disk_full'])
def test_baseline_mmengine_hook_loses_the_only_checkpoint(
        tmp_path, monkeypatch, how):
    """Why AtomicCheckpointHook exists: with mmengine's CheckpointHook and
    ``max_keep_ckpts=1`` the same failure leaves nothing to resume from."""
    runner = _toy_runner(
        tmp_path, 'CheckpointHook',
        [FaultAtSave(monkeypatch, f'iter_{MAX_ITERS}.pth', how)])
    with pytest.raises((RuntimeError, OSError)):
        runner.train()
    monkeypatch.undo()
    usable = [
        f for f in os.listdir(tmp_path)
        if f.endswith('.pth') and _loadable(osp.join(tmp_path, f))
    ]
    assert usable == []


def test_best_checkpoint_survives_failed_save_of_new_best(
        tmp_path, monkeypatch):
    IterMetric.calls = 0
    runner = _toy_runner(
        tmp_path,
        'AtomicCheckpointHook', [
            FaultAtSave(monkeypatch, f'best_acc_iter_{MAX_ITERS}.pth',
                        'disk_full')
        ],
        save_best='acc')
    with pytest.raises(OSError):
        runner.train()
    monkeypatch.undo()
    files = sorted(os.listdir(tmp_path))
    assert f'best_acc_iter_{CKPT_INTERVAL}.pth' in files, files
    assert f'best_acc_iter_{MAX_ITERS}.pth' not in files
    assert _loadable(osp.join(tmp_path, f'best_acc_iter_{CKPT_INTERVAL}.pth'))


def test_atomic_hook_keeps_mmengine_behaviour(tmp_path):
    """No failure: same files as mmengine's hook (max_keep_ckpts, best
    checkpoint, last_checkpoint pointer), all loadable."""
    IterMetric.calls = 0
    _toy_runner(
        tmp_path,
        'AtomicCheckpointHook',
        save_best='acc',
        max_keep_ckpts=1,
        max_iters=3 * CKPT_INTERVAL).train()
    last = 3 * CKPT_INTERVAL
    ckpts = sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth'))
    assert ckpts == [f'best_acc_iter_{last}.pth', f'iter_{last}.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == osp.join(
        tmp_path, f'iter_{last}.pth')
    assert all(_loadable(osp.join(tmp_path, f)) == last for f in ckpts)


def test_atomic_write_bytes_failure_leaves_old_content(tmp_path, monkeypatch):
    path = tmp_path / 'file.bin'
    atomic_write_bytes(path, b'old content')

    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError(errno.EIO, 'simulated I/O error')

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b'new content that never lands')
    monkeypatch.setattr(os, 'replace', real_replace)
    assert path.read_bytes() == b'old content'
    assert os.listdir(tmp_path) == ['file.bin']
    atomic_write_bytes(path, b'new')
    assert path.read_bytes() == b'new'
