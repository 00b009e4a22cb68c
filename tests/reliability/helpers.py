"""Shared helpers of the reliability tests: running the tools as
subprocesses, reading the logged losses (the tiny config comes from
``tests/builders.py``)."""
import glob
import json
import os
import os.path as osp
import signal
import time

import pytest
from builders import (ADAMIXER_CFG, CKPT_INTERVAL, LORS_CFG,  # noqa: F401
                      MAX_ITERS, write_tiny_config)  # (re-exported)
from tool_runner import finish, popen, tool_env  # noqa: F401  (re-exported)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
CLASSES = ('circle', 'square', 'triangle')

TIMEOUT_S = 300


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
