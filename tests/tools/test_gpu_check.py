"""tools/analysis/gpu_check.sh on this CPU: its argument handling, its
refusals, and every step of ``--device cpu --quick`` (the cuda tests skip
there; the GPU run itself needs a GPU machine)."""
import os.path as osp

import pytest
import torch
from helpers import REPO_ROOT, run

SCRIPT = osp.join(REPO_ROOT, 'tools', 'analysis', 'gpu_check.sh')


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--bogus'], "unknown argument '--bogus'"),
    (['--device', 'tpu'], "--device must be cuda or cpu, got 'tpu'"),
    (['--iters', '0'], "--iters must be a positive integer, got '0'"),
    (['--out'], 'usage'),
])
def test_bad_arguments_exit_2_with_the_reason(args, message, tmp_path):
    proc = run(['bash', SCRIPT, *args], check=False)
    assert proc.returncode == 2
    assert message in proc.stdout or (message == 'usage'
                                      and '--out DIR' in proc.stdout)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')
def test_cuda_without_a_gpu_is_refused_before_any_step(tmp_path):
    proc = run(['bash', SCRIPT, '--out', str(tmp_path / 'out')], check=False)
    assert proc.returncode == 1
    assert 'sees no CUDA device' in proc.stdout
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_cpu_dry_run_passes_every_step_and_never_overwrites(tmp_path):
    out = tmp_path / 'check'
    proc = run([
        'bash', SCRIPT, '--device', 'cpu', '--quick', '--iters', '2', '--out',
        str(out)
    ],
               timeout=600)
    summary = (out / 'summary.md').read_text()
    steps = [line for line in summary.splitlines() if line.startswith('- ')]
    assert [s.split(' (')[0] for s in steps] == [
        '- PASS pytest -m cuda', '- PASS benchmark float32',
        '- PASS benchmark --amp', '- PASS train 2 iterations'
    ]
    assert 'skipped' in (out / 'pytest_cuda.log').read_text()
    bench = (out / 'benchmark_amp.md').read_text()
    assert 'amp True' in bench and ':merged' in bench
    assert 'coco/bbox_mAP' in (out / 'train.log').read_text()
    # a second run into the same folder is refused, the first one kept
    again = run(['bash', SCRIPT, '--device', 'cpu', '--out',
                 str(out)],
                check=False)
    assert again.returncode == 2 and 'already holds a check' in again.stdout
    assert (out / 'summary.md').read_text() == summary
    assert proc.returncode == 0
