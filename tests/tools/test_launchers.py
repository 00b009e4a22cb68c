"""tools/find_python.sh (sourced by tools/dist_*.sh, slurm_*.sh,
gpu_check.sh) puts the clone on PYTHONPATH only when the Python it runs
cannot import lors_det: an installed lors_det is never shadowed by the
clone."""
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

FIND_PYTHON = os.path.join(REPO_ROOT, 'tools', 'find_python.sh')


def _pythonpath(python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PYTHON'] = python
    out = subprocess.run(
        ['bash', '-c', f'source {FIND_PYTHON}; echo "[$PYTHONPATH]"'],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_installed_lors_det_is_not_shadowed(tmp_path):
    # this venv imports lors_det (installed, here editable)
    assert _pythonpath(sys.executable, tmp_path) == '[]'


@pytest.mark.slow
def test_clone_is_added_when_lors_det_is_not_installed(tmp_path):
    # a Python that cannot import lors_det: the clone is how it finds it
    bare = tmp_path / 'python'
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S -E "$@"\n')
    bare.chmod(0o755)
    assert _pythonpath(str(bare), tmp_path) == f'[{REPO_ROOT}]'
