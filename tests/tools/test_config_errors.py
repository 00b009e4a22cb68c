"""A config that cannot be found or built is one ``error:`` line from the
tools (not a traceback): count_params.py, params_table.py (in-process),
demo.py (a subprocess: what the user sees)."""
import importlib.util
import os
import subprocess
import sys

import pytest
from helpers import LORS_CFG, REPO_ROOT

TOOLS = os.path.join(REPO_ROOT, 'tools')
BAD_RANK = 'model.decoder.mixing.lorsa.rank=0'


def _fails_in_one_line(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    env.pop('LORS_DET_TRACEBACK', None)
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    errors = [
        line for line in proc.stderr.splitlines() if line.startswith('error:')
    ]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def _tool(name):
    """tools/analysis/NAME.py as a module (in-process: no subprocess start-up
    per case)."""
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', os.path.join(TOOLS, 'analysis', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exits_in_one_line(tool, args):
    """``tool.main(args)`` exits with one ``error:`` line (what Python
    prints for ``sys.exit(message)``)."""
    with pytest.raises(SystemExit) as e:
        tool.main(args)
    message = e.value.code
    assert isinstance(message, str) and message.startswith('error:') and \
        '\n' not in message, message
    return message


@pytest.mark.parametrize('args, message', [
    (['missing.py'], 'error: config file does not exist: missing.py'),
    (['lors_det::nope/x.py'], "error: config 'lors_det::nope/x.py' does not "
     'exist'),
    ([LORS_CFG, '--cfg-options', BAD_RANK], 'rank must be a positive '
     'integer, got 0'),
    ([
        'lors_det::synthetic/adamixer-lors_tiny_synthetic.py', '--cfg-options',
        'model.decoder.type=NoSuchDecoder'
    ], 'NoSuchDecoder is not in the'),
])
def test_count_params(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _exits_in_one_line(_tool('count_params'), args)
    assert message in line, line


def _bad_config(tmp_path):
    path = tmp_path / 'bad.py'
    path.write_text(f'_base_ = [{LORS_CFG!r}]\n'
                    'model = dict(decoder=dict(mixing=dict(lorsa=dict('
                    'rank=0))))\n')
    return str(path)


def test_params_table(tmp_path):
    line = _exits_in_one_line(_tool('params_table'), [_bad_config(tmp_path)])
    assert line.startswith(f'error: {tmp_path}/bad.py: ') and \
        'rank must be a positive integer' in line, line


@pytest.mark.slow
def test_demo(tmp_path):
    line = _fails_in_one_line([
        sys.executable,
        os.path.join(TOOLS, 'demo.py'), '--quick', '--config',
        _bad_config(tmp_path), '--work-dir',
        str(tmp_path / 'wd')
    ], tmp_path)
    assert 'rank must be a positive integer' in line, line


# ---------------------------------------------------------------------------
# the other tools that take a config: in-process, their command line in
# sys.argv (a config error stops them before any checkpoint is read)
# ---------------------------------------------------------------------------
def _script(rel):
    name = os.path.splitext(os.path.basename(rel))[0]
    folder = os.path.join(TOOLS, os.path.dirname(rel))
    spec = importlib.util.spec_from_file_location(
        f'{name}_tool', os.path.join(folder, os.path.basename(rel)))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, folder)  # lors_to_lors_det imports its neighbour
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def _adamixer_main(module):
    return module.main('adamixer', module.__doc__, module.__file__)


def _lors_main(module):
    return module.main('lors', module.__doc__, module.__file__)


#: tool -> (its argv after CONFIG's place is filled, how to call main)
TOOL_ARGS = {
    'train.py': (lambda c, t: [c, '--work-dir', f'{t}/wd'], None),
    'analysis/get_flops.py': (lambda c, t: [c], None),
    'analysis/visualize_sampling_points.py':
    (lambda c, t: [c, f'{t}/x.pth', f'{t}/x.jpg', '--out', f'{t}/o.png'],
     None),
    'deployment/pytorch2onnx.py':
    (lambda c, t: [c, f'{t}/x.pth', f'{t}/o.onnx'], None),
    'model_converters/lors_merge.py':
    (lambda c, t: [c, f'{t}/x.pth', f'{t}/o.pth'], None),
    'model_converters/lorita_compress.py':
    (lambda c, t: [c, f'{t}/x.pth', f'{t}/o.pth', '--rank', '2'], None),
    'model_converters/adamixer_to_lors_det.py':
    (lambda c, t: [f'{t}/x.pth', f'{t}/o.pth', '--config', c], _adamixer_main),
    'model_converters/lors_to_lors_det.py':
    (lambda c, t: [f'{t}/x.pth', f'{t}/o.pth', '--config', c], _lors_main),
}


@pytest.mark.parametrize('bad', ['missing_scope', 'bad_option'])
@pytest.mark.parametrize('tool', sorted(TOOL_ARGS))
def test_tools_report_a_bad_config_in_one_line(tool, bad, tmp_path,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ('x.pth', 'x.jpg'):  # never read: the config fails first
        (tmp_path / name).write_bytes(b'not read')
    if bad == 'missing_scope':
        config, expected = 'lors_det::nope/x.py', \
            "error: config 'lors_det::nope/x.py' does not exist"
    else:
        config, expected = _bad_config(tmp_path), \
            'rank must be a positive integer'
    argv, call = TOOL_ARGS[tool]
    module = _script(tool)
    monkeypatch.setattr(sys, 'argv', [tool, *argv(config, tmp_path)])
    with pytest.raises(SystemExit) as e:
        (call or (lambda m: m.main()))(module)
    message = e.value.code
    assert isinstance(message, str) and message.startswith('error:') and \
        '\n' not in message, message
    assert expected in message, message
    assert not (tmp_path / 'o.pth').exists()
