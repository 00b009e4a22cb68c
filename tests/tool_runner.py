"""Run a tool as a subprocess like a user would (from the repo root, on
CPU), with a hard timeout that kills the whole process group (torchrun and
its workers included)."""
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TIMEOUT_S = 300


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
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env or tool_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, cmd, check=True,
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


def run(cmd, env=None, check=True,
        timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    return finish(popen(cmd, env), cmd, check=check, timeout=timeout)
