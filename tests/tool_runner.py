"""Run a tool as a subprocess like a user would, with a hard timeout that
kills the whole process group (no stray torchrun workers)."""
import os
import signal
import subprocess

import pytest

TIMEOUT_S = 300


def finish(proc: subprocess.Popen, cmd, check=True,
           timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    """Wait for ``proc`` (started with ``start_new_session=True`` and merged
    stdout/stderr); fail the test on timeout or, with ``check``, non-zero
    exit, showing the output's tail."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'timed out after {timeout}s: {cmd}\n{out[-6000:]}')
    if check and proc.returncode != 0:
        pytest.fail(f'exit code {proc.returncode}: {cmd}\n{out[-6000:]}')
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


def run(cmd, cwd, env, check=True,
        timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    return finish(proc, cmd, check=check, timeout=timeout)
