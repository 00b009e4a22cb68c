"""tools/analysis/benchmark.py runs end to end (correctness, not timing)."""
import json
import subprocess
import sys

from conftest import REPO, SYNTHETIC


def test_benchmark_json_reports_every_phase_and_the_merged_variant():
    cfg = SYNTHETIC['lors']
    out = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', cfg, cfg + ':merged',
         '--json', '--shape', '64', '64', '--warmup', '0', '--repeats', '1',
         '--rounds', '2'],
        cwd=REPO, capture_output=True, text=True, check=True)
    results = json.loads(out.stdout)
    assert [r['merged'] for r in results] == [False, True]
    assert all(r['rounds'] == 2 for r in results)
    for r in results:
        for phase in ('forward', 'train', 'infer'):
            assert r[phase]['min_ms'] <= r[phase]['ms'] <= r[phase]['max_ms']
            assert results[0][phase]['ratio'] == 1.0
        assert r['decoder_shared'] > 0 and r['decoder_private'] > 0
        # AdamW keeps two float32 moments per parameter (+ a step scalar
        # per parameter tensor)
        extra = r['optim_state_mb'] * 2**20 - 2 * 4 * r['decoder_params']
        assert 0 <= extra < 4 * 1000


def test_benchmark_rejects_a_missing_config_and_zero_rounds():
    out = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', 'nope.py'],
        cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and 'nope.py' in out.stderr
    out = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', SYNTHETIC['lors'],
         '--rounds', '0'], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and '--rounds' in out.stderr
