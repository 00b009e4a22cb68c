"""Session set-up (mmdet registries, cached metafile reads, the ``slow``
and ``cuda`` markers) and the shared fixtures: the tiny models, the
synthetic data, the tiny training configs and the (expensive, shared)
subprocess training runs, one at a time: an uninterrupted reference run and
a run that is SIGKILLed in the middle of writing a checkpoint (its
resumption happens in the tests). The helpers live in ``helpers.py``.
"""
import functools
import os
import os.path as osp
import signal
import sys

import pytest
import torch
from helpers import (CKPT_INTERVAL, MAX_ITERS, SYNTHETIC, TRAIN, build_model,
                     finish, popen, run, tool_env, wait_for, write_tiny_config)
from mmdet.utils import register_all_modules
from mmengine.config import utils as config_utils

import lors_det  # noqa: F401  (registers the plugin)

register_all_modules(init_default_scope=True)


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'cuda: needs a CUDA GPU (tools/analysis/gpu_check.sh '
        'runs them with -m cuda)')
    config.addinivalue_line(
        'markers', 'slow: runs a tool or a training in a subprocess, or '
        'takes more than ~5 s (`make test-fast` deselects them)')


# mmengine re-reads all ~300 metafiles of mmdet for every ``mmdet::`` base a
# config inherits (~0.7 s each); they do not change during a test run
_load_metafile = config_utils.load
config_utils.load = functools.lru_cache(maxsize=None)(_load_metafile)


@pytest.fixture(params=sorted(SYNTHETIC))
def tiny_model(request):
    torch.manual_seed(0)
    return build_model(SYNTHETIC[request.param])


# A test-only hook for the interrupted run: when the checkpoint file
# `filename` is opened for writing (whatever the writer: mmengine's
# LocalBackend writes `iter_N.pth` directly, AtomicLocalBackend writes
# `iter_N.pth.partial`), half of the bytes are written and flushed, the
# marker file is created and the process hangs there until the test
# SIGKILLs it: a crash in the middle of a checkpoint write.
FREEZE_HOOK = '''
import builtins
import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class _HalfWriter:

    def __init__(self, f, marker):
        self._f, self._marker = f, marker

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        os.fsync(self._f.fileno())
        builtins.open(self._marker, 'w').close()  # (not patched for 'w')
        time.sleep(3600)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._f, name)


@HOOKS.register_module()
class FreezeInSaveHook(Hook):

    def __init__(self, filename, marker):
        self.filename, self.marker = filename, marker

    def before_save_checkpoint(self, runner, checkpoint):
        real_open = builtins.open
        target, marker = self.filename, self.marker

        def patched(file, mode='r', *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            name = os.path.basename(str(file))
            if 'w' in mode and name.startswith(target) and \\
                    str(file) != marker:
                return _HalfWriter(f, marker)
            return f

        builtins.open = patched
'''


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    from lors_det.datasets import make_synthetic_coco
    root = tmp_path_factory.mktemp('synthetic_data') / 'data'
    make_synthetic_coco(
        str(root),
        num_train=8,
        num_val=4,
        img_size=64,
        seed=0,
        min_objects=1,
        empty_ratio=0.0)
    return root


@pytest.fixture(scope='session')
def tiny_config(synthetic_root, tmp_path_factory):
    """The tiny AdaMixer config (derived from the shipped synthetic one)."""
    d = tmp_path_factory.mktemp('tiny_cfg')
    return write_tiny_config(d / 'tiny_adamixer.py', synthetic_root)


@pytest.fixture(scope='session')
def tiny_lors_config(synthetic_root, tmp_path_factory):
    """The tiny AdaMixer+LORS config (derived from the shipped one)."""
    d = tmp_path_factory.mktemp('tiny_cfg_lors')
    return write_tiny_config(
        d / 'tiny_adamixer_lors.py', synthetic_root, lors=True)


@pytest.fixture(scope='session')
def reference_run(tiny_config, tmp_path_factory):
    """An uninterrupted ``tools/train.py`` run: its work_dir."""
    work_dir = str(tmp_path_factory.mktemp('run_reference'))
    run([sys.executable, TRAIN, tiny_config, '--work-dir', work_dir])
    return work_dir


@pytest.fixture(scope='session')
def interrupted_run(tiny_config, tmp_path_factory):
    """The same training, SIGKILLed while it writes ``iter_{MAX_ITERS}.pth``
    (after ``iter_{CKPT_INTERVAL}.pth`` was saved). Returns the work_dir,
    the output and the state of the work_dir right after the kill."""
    assert MAX_ITERS == 2 * CKPT_INTERVAL
    root = tmp_path_factory.mktemp('run_interrupted')
    hook_dir = root / 'hook'
    hook_dir.mkdir()
    (hook_dir / 'freeze_in_save_hook.py').write_text(FREEZE_HOOK)
    marker = root / 'writing_checkpoint'
    cfg = root / 'tiny_adamixer_freeze.py'
    cfg.write_text(
        f'_base_ = [{tiny_config!r}]\n'
        "custom_imports = dict(imports=['lors_det', 'freeze_in_save_hook'], "
        'allow_failed_imports=False)\n'
        f"custom_hooks = [dict(type='FreezeInSaveHook', "
        f"filename='iter_{MAX_ITERS}.pth', marker={str(marker)!r})]\n")
    work_dir = root / 'work_dir'
    cmd = [sys.executable, TRAIN, str(cfg), '--work-dir', str(work_dir)]
    proc = popen(cmd, tool_env(extra_pythonpath=[hook_dir]))
    wait_for(str(marker), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    out = finish(proc, cmd, check=False)
    last = work_dir / 'last_checkpoint'
    partials = sorted(work_dir.glob(f'iter_{MAX_ITERS}.pth.*.partial'))
    return dict(
        work_dir=str(work_dir),
        output=out.stdout,
        returncode=out.returncode,
        files=sorted(os.listdir(work_dir)),
        last_checkpoint=last.read_text() if last.exists() else None,
        partial_size=osp.getsize(partials[0]) if partials else None)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """In-process tests: one intra-op thread (see helpers.tool_env)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
