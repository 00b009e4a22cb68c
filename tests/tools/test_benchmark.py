"""tools/analysis/benchmark.py: how rounds are combined, and the end-to-end
run (correctness, not timing: speed targets live in docs/benchmarks.md)."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
from helpers import LORS_CFG, REPO_ROOT, SYNTHETIC, build_model

from lors_det.lors import count_parameters

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis', 'benchmark.py')


def _tool():
    spec = importlib.util.spec_from_file_location('benchmark_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(ms):
    return dict(ms=ms, min_ms=ms - 1, max_ms=ms + 1, peak_mb=ms / 10)


def test_rounds_combine_to_medians_and_per_round_ratios():
    """Two configs, three rounds: the ratio is the median of the per-round
    ratios (not the ratio of the medians), min/max span all rounds."""
    rounds = [[
        dict(config='a', train=_run(a)),
        dict(config='b', train=_run(b))
    ] for a, b in ((100, 110), (200, 180), (100, 150))]
    a, b = _tool().combine(rounds)
    assert a['rounds'] == b['rounds'] == 3
    assert a['train']['ms'] == 100 and b['train']['ms'] == 150
    assert b['train']['ratio'] == pytest.approx(1.1)  # of 1.1, 0.9, 1.5
    assert a['train']['ratio'] == 1.0
    assert (b['train']['min_ms'], b['train']['max_ms']) == (109, 181)
    assert b['train']['peak_mb'] == 18.0


def test_paired_configs_take_turns_and_ratios_are_per_turn(monkeypatch):
    """``--paired``: after the warm-up the configs alternate call by call
    (a b, b a, ...), and the ratio is the median of the per-turn ratios
    (1.1, 0.9, 1.5, 1.0 -> 1.05), not the ratio of the medians (1.1)."""
    tool = _tool()
    calls = []

    def fake_phases(spec, args):
        yield dict(config=spec)
        yield 'train', lambda: calls.append(spec), (1, 4)

    # clock() is called in the turn order: a b | b a | a b | b a
    clocked = iter([100, 110, 180, 200, 100, 150, 300, 300])
    monkeypatch.setattr(tool, 'phases', fake_phases)
    monkeypatch.setattr(tool, 'clock', lambda fn, device:
                        (fn(), next(clocked))[1])
    cfg = LORS_CFG  # parse_args checks that the files exist
    args = tool.parse_args([cfg, cfg + ':merged', '--paired'])
    args.configs = ['a', 'b']
    a, b = tool.measure_paired(args)
    assert calls == ['a', 'b'] + ['a', 'b', 'b', 'a'] * 2
    assert a['train']['ratio'] == 1.0
    assert b['train']['ratio'] == pytest.approx(1.05)
    assert (b['train']['ms'], b['train']['min_ms']) == (165, 110)
    assert a['train']['peak_mb'] is None
    # combine() keeps a paired round's ratio
    out, = tool.combine([[a, b]])[1:]
    assert out['train']['ratio'] == pytest.approx(1.05)
    assert out['train']['peak_mb'] is None


@pytest.mark.slow
def test_benchmark_json_reports_every_phase_and_the_merged_variant():
    cfg = SYNTHETIC['lors']
    out = subprocess.run([
        sys.executable, 'tools/analysis/benchmark.py', cfg, cfg + ':merged',
        '--json', '--shape', '64', '64', '--warmup', '0', '--repeats', '1',
        '--rounds', '2'
    ],
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=True)
    results = json.loads(out.stdout)
    assert [r['merged'] for r in results] == [False, True]
    # CPU workers keep freed memory (no page faults per call, see docstring)
    assert all(r['malloc'] == 'retained' for r in results)
    assert all(r['rounds'] == 2 for r in results)
    counts = count_parameters(build_model(SYNTHETIC['lors']).decoder)
    for r in results:
        assert {'forward', 'train', 'infer'} <= set(r)
        assert (r['decoder_params'], r['decoder_shared'],
                r['decoder_private']) == (counts['total'], counts['shared'],
                                          counts['private'])
        # AdamW keeps two float32 moments per parameter (+ a step scalar
        # per parameter tensor)
        extra = r['optim_state_mb'] * 2**20 - 2 * 4 * r['decoder_params']
        assert 0 <= extra < 4 * 1000


@pytest.mark.slow
def test_paired_run_times_every_config_in_one_worker():
    """End to end: ``--paired --rounds 2`` reports every phase of both
    configs, the first at ratio 1, and no peak memory ('-')."""
    cfg = SYNTHETIC['lors']
    out = subprocess.run([
        sys.executable, 'tools/analysis/benchmark.py', SYNTHETIC['adamixer'],
        cfg + ':merged', '--paired', '--shape', '64', '64', '--warmup', '0',
        '--repeats', '2', '--rounds', '2'
    ],
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=True)
    assert 'runs paired in one process' in out.stdout
    rows = [r for r in out.stdout.splitlines() if r.startswith('| configs/')]
    assert len(rows) == 2 and ':merged' in rows[1]
    cells = rows[0].strip('|').split('|')
    assert all(c.strip().endswith('(1.00x)') for c in cells[3:6])
    assert [c.strip() for c in cells[6:]] == ['-'] * 3


@pytest.mark.slow
def test_benchmark_rejects_a_missing_config_and_zero_rounds():
    out = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', 'nope.py'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True)
    assert out.returncode != 0 and 'nope.py' in out.stderr
    out = subprocess.run([
        sys.executable, 'tools/analysis/benchmark.py', SYNTHETIC['lors'],
        '--rounds', '0'
    ],
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True)
    assert out.returncode != 0 and '--rounds' in out.stderr


@pytest.mark.slow
def test_mixing_mode_times_one_mixing_call_per_stage():
    """``--mixing STAGE``: the three phases of one mixing call, the stage
    and its K, and the parameters of the mixing module, not the decoder."""
    cfg = SYNTHETIC['lors']
    out = subprocess.run([
        sys.executable, 'tools/analysis/benchmark.py', SYNTHETIC['adamixer'],
        cfg, cfg + ':merged', '--mixing', '5', '--json', '--warmup', '0',
        '--repeats', '1'
    ],
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=True)
    results = json.loads(out.stdout)
    lors = build_model(cfg).decoder.mixing
    assert [r['num_factors'] for r in results] == [
        None, lors.generator.num_factors[5], lors.generator.num_factors[5]
    ]
    for r, name in zip(results, ('adamixer', 'lors', 'lors')):
        assert r['mixing_stage'] == 5
        assert {'forward', 'train', 'infer'} <= set(r)
        assert 'decoder_params' not in r
        mixing = build_model(SYNTHETIC[name]).decoder.mixing
        assert r['mixing_params'] == count_parameters(mixing)['total']
    assert all(r['malloc'] == 'retained' for r in results)
    system = subprocess.run([
        sys.executable, 'tools/analysis/benchmark.py', cfg, '--mixing', '0',
        '--system-malloc', '--warmup', '0', '--repeats', '1'
    ],
                            cwd=REPO_ROOT,
                            capture_output=True,
                            text=True,
                            check=True)
    assert 'device cpu, malloc system,' in system.stdout
    bad = subprocess.run(
        [sys.executable, 'tools/analysis/benchmark.py', cfg, '--mixing', '6'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True)
    assert bad.returncode != 0 and '--mixing 6' in bad.stderr


@pytest.mark.slow
def test_compile_flag_times_the_compiled_mixing():
    """``--compile``: the phases run under torch.compile (inductor), and
    the JSON says so (one mixing call: the smallest graphs to compile)."""
    out = subprocess.run([
        sys.executable, 'tools/analysis/benchmark.py', SYNTHETIC['lors'],
        '--mixing', '0', '--compile', '--json', '--warmup', '0', '--repeats',
        '1'
    ],
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=True)
    r, = json.loads(out.stdout)
    assert r['compile'] is True and r['mixing_stage'] == 0
    assert all(r[p]['ms'] > 0 for p in ('forward', 'train', 'infer'))
