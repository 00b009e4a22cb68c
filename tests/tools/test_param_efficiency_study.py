"""tools/analysis/compare_param_efficiency.py: the statistics on known
numbers and the --quick study end to end."""
import importlib.util
import json
import math
import os
import os.path as osp
import re
import sys

import pytest
from helpers import REPO_ROOT, run

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis', 'compare_param_efficiency.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('param_study_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_t_quantile_matches_the_table(tool):
    # two-sided 95% Student-t quantiles from any t table
    assert tool.t_quantile(0.95, 1) == pytest.approx(12.706, abs=1e-3)
    assert tool.t_quantile(0.95, 2) == pytest.approx(4.303, abs=1e-3)
    assert tool.t_quantile(0.95, 4) == pytest.approx(2.776, abs=1e-3)


def test_mean_std_is_the_sample_std(tool):
    mean, std = tool.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))  # ddof 1, not sqrt(1.25)
    assert tool.mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        tool.mean_std([])


def test_paired_difference_on_known_numbers(tool):
    a = {0: 10.0, 1: 12.0, 2: 14.0, 5: 99.0}  # seed 5 has no partner
    b = {0: 9.0, 1: 10.0, 2: 11.0}
    d = tool.paired_difference(a, b)
    # differences 1, 2, 3: mean 2, std 1, half width t(0.975, 2) / sqrt(3)
    half = 4.302653 / math.sqrt(3)
    assert d['n'] == 3 and d['mean'] == pytest.approx(2.0)
    assert d['std'] == pytest.approx(1.0)
    assert d['low'] == pytest.approx(2.0 - half, abs=1e-5)
    assert d['high'] == pytest.approx(2.0 + half, abs=1e-5)
    one = tool.paired_difference({0: 3.0}, {0: 1.0, 1: 2.0})
    assert one['n'] == 1 and one['mean'] == 2.0 and one['low'] is None
    with pytest.raises(ValueError, match='no seed in common'):
        tool.paired_difference({0: 1.0}, {1: 1.0})


def test_summary_pairs_by_seed(tool):
    """Seed-to-seed spread is large, the per-seed gap is exactly 1 AP: a
    paired interval is [1, 1]; an unpaired one would contain 0."""
    rows = []
    for key, offset in (('adamixer', 0.0), ('lors', 0.01)):
        for seed, ap in ((0, 0.10), (1, 0.20), (2, 0.30)):
            rows.append(
                dict(
                    key=key,
                    label=key,
                    config=f'{key}.py',
                    seed=seed,
                    ap=ap + offset,
                    ap50=2 * ap,
                    decoder_params=100 if key == 'lors' else 300,
                    total_params=1000,
                    minutes=1.0))
    rows.reverse()  # order of the rows must not matter
    entries = {e['key']: e for e in tool.summarise(rows)}
    lors = entries['lors']
    assert lors['ap_mean'] == pytest.approx(21.0)
    assert lors['ap_std'] == pytest.approx(10.0)
    assert lors['ap_diff']['low'] == pytest.approx(1.0)
    assert lors['ap_diff']['high'] == pytest.approx(1.0)
    assert lors['ap50_diff']['mean'] == pytest.approx(0.0)
    assert 'ap_diff' not in entries['adamixer']
    table = tool.table(list(entries.values()))
    assert '| lors | 100 (-67%) | 21.0 ± 10.0 |' in table
    assert '+1.0 [+1.0, +1.0]' in table


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    work_dir, data = tmp_path / 'study', tmp_path / 'data'
    cmd = [
        sys.executable, TOOL, '--quick', '--only', 'lors', 'lorita',
        '--work-dir',
        str(work_dir), '--data-root',
        str(data)
    ]
    out = run(cmd).stdout
    with open(work_dir / 'study.json') as f:
        study = json.load(f)
    assert study['quick'] and study['seeds'] == [0, 1]
    entries = {e['key']: e for e in study['configs']}
    assert set(entries) == {'adamixer', 'lors', 'lorita', 'lorita@ratio=0.5'}
    for e in entries.values():
        assert e['seeds'] == [0, 1]
        assert all(0.0 <= v <= 100.0 for v in e['ap'] + e['ap50'])
    assert entries['lors']['ap_diff']['n'] == 2
    ada = entries['adamixer']['decoder_params']
    assert entries['lors']['decoder_params'] < 0.5 * ada
    assert (entries['lorita@ratio=0.5']['decoder_params'] <
            entries['lorita']['decoder_params'])
    with open(data / 'annotations' / 'instances_val.json') as f:
        assert len(json.load(f)['categories']) == 9  # the hard preset
    assert 'AdaMixer+LORS' in (work_dir / 'study.md').read_text()
    assert 'AP - AdaMixer [95% CI]' in out
    # progress: runs done of all, elapsed and time left (tqdm, stderr)
    assert re.search(r'study: 100%.* 6/6 \[\d+:\d+<00:00', out), out[-800:]

    # a second call reuses the finished runs
    again = run(cmd).stdout
    assert 'started' not in again
    # a run directory without result.json is never trained over
    os.remove(work_dir / 'lors' / 'seed1' / 'result.json')
    refused = run(cmd, check=False)
    assert refused.returncode != 0
    assert 'unfinished run' in refused.stdout
