"""tools/analysis/gpu_check.sh names its test dependency (pytest) before
any step when its Python lacks it."""
import os
import os.path as osp
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

SCRIPT = osp.join(REPO_ROOT, 'tools', 'analysis', 'gpu_check.sh')


@pytest.mark.slow
def test_missing_pytest_is_named_before_any_step(tmp_path):
    # a Python whose `import pytest` fails (a stub module raising)
    stub = tmp_path / 'stub'
    stub.mkdir()
    (stub / 'pytest.py').write_text("raise ImportError('no pytest here')\n")
    python = tmp_path / 'python'
    python.write_text(f'#!/bin/sh\nPYTHONPATH={stub} exec {sys.executable} '
                      '"$@"\n')
    python.chmod(0o755)
    env = dict(os.environ, PYTHON=str(python))
    proc = subprocess.run(
        ['bash', SCRIPT, '--device', 'cpu', '--out',
         str(tmp_path / 'out')],
        env=env,
        capture_output=True,
        text=True,
        timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'needs pytest' in proc.stderr
    assert 'requirements/tests.txt' in proc.stderr
    assert not (tmp_path / 'out').exists()
