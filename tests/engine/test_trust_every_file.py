"""Every file a user hands us is hostile until checked (issue "Trust every
file"): one checkpoint reader that runs no code from a file, outputs that
never replace an input, resumes that never restart over existing work, and
weights that cannot be right refused at load. The malicious files are built
here."""
import collections
import io
import os
import os.path as osp
import re
import subprocess
import sys
import zipfile

import pytest
import torch
from helpers import MAX_ITERS, REPO_ROOT, TEST, TRAIN, run

from lors_det.engine.checkpoint import (TRUST_ENV, CheckpointMismatchError,
                                        UntrustedCheckpointError,
                                        load_checkpoint_file, trust_from_env)
from lors_det.engine.fileio import (OutputPathError, WorkDirBusyError,
                                    WorkDirLock, atomic_write_bytes,
                                    check_outputs)
from lors_det.engine.resume import (ResumeError, find_resume_checkpoint,
                                    refuse_fresh_start)
from lors_det.engine.weights import check_state_dict

# ---------------------------------------------------------------------------
# one reader
# ---------------------------------------------------------------------------
_READ_CALLS = re.compile(
    r'torch\.load\(|pickle\.loads?\(|pickle\.Unpickler|CheckpointLoader'
    r'|(?<![\w.])load_checkpoint\(|runner\.checkpoint import'
    r'|(?<!\w)_load_checkpoint'
    r'|init_detector\(\s*[\w.]+\s*,\s*(?!\s|None\b)')


def test_no_checkpoint_is_read_outside_the_one_reader():
    reader = osp.join('lors_det', 'engine', 'checkpoint.py')
    offenders = []
    for top in ('lors_det', 'tools', 'demo'):
        for root, _, files in os.walk(osp.join(REPO_ROOT, top)):
            for name in files:
                if not name.endswith('.py'):
                    continue
                path = osp.join(root, name)
                rel = osp.relpath(path, REPO_ROOT)
                if rel == reader:
                    continue
                with open(path) as f:
                    for i, line in enumerate(f, 1):
                        if _READ_CALLS.search(line):
                            offenders.append(f'{rel}:{i}: {line.strip()}')
    assert not offenders, '\n'.join(offenders)


def _with_pickle(tmp_path, name, payload: bytes) -> str:
    """A zip checkpoint (as torch.save writes) whose data.pkl is
    ``payload``."""
    buf = io.BytesIO()
    torch.save({'state_dict': {}}, buf)
    path = str(tmp_path / name)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('data.pkl'):
                data = payload
            dst.writestr(info.filename, data)
    return path


def test_build_on_a_class_is_refused(tmp_path):
    """A pickle that applies BUILD to ``collections.Counter`` would replace
    ``Counter.__contains__`` for the whole process."""
    patch = (
        b'\x80\x02ccollections\nCounter\n'  # the class itself
        b'N}X\x0c\x00\x00\x00__contains__cbuiltins\nset\ns\x86'
        b'b0')  # BUILD with (None, {'__contains__': set}), POP
    path = _with_pickle(tmp_path, 'patch.pth', patch + b'}.')
    before = collections.Counter.__contains__
    with pytest.raises(UntrustedCheckpointError, match='BUILD') as info:
        load_checkpoint_file(path, trusted=False)
    assert path in str(info.value)
    assert collections.Counter.__contains__ is before
    assert 'a' in collections.Counter('a')
    # the same bytes without the patch load: the container is valid
    assert load_checkpoint_file(
        _with_pickle(tmp_path, 'plain.pth', b'\x80\x02}.')) == {}


def test_global_outside_the_list_is_refused(tmp_path):
    marker = tmp_path / 'code_ran'
    payload = (b'\x80\x02cos\nmkdir\nX' + bytes([len(str(marker))]) +
               b'\x00\x00\x00' + str(marker).encode() + b'\x85R.')
    path = _with_pickle(tmp_path, 'evil.pth', payload)
    with pytest.raises(UntrustedCheckpointError, match='os.mkdir'):
        load_checkpoint_file(path, trusted=False)
    assert not marker.exists()


@pytest.mark.parametrize('value,trusted', [('1', True), ('yes', True),
                                           ('TRUE', True), ('0', False),
                                           ('no', False), ('FALSE', False),
                                           ('', False)])
def test_trust_variable_values(monkeypatch, value, trusted):
    monkeypatch.setenv(TRUST_ENV, value)
    assert trust_from_env() is trusted


@pytest.mark.parametrize('value', ['off', 'maybe', '2'])
def test_trust_variable_not_understood_is_an_error(monkeypatch, value):
    monkeypatch.setenv(TRUST_ENV, value)
    with pytest.raises(ValueError, match=TRUST_ENV):
        trust_from_env()


def test_trust_variable_no_does_not_trust(tmp_path, monkeypatch):
    import argparse
    path = str(tmp_path / 'namespace.pth')
    torch.save({'args': argparse.Namespace(lr=0.1)}, path)
    monkeypatch.setenv(TRUST_ENV, 'no')
    with pytest.raises(UntrustedCheckpointError, match=f'{TRUST_ENV}=1'):
        load_checkpoint_file(path)
    monkeypatch.setenv(TRUST_ENV, '1')
    with pytest.warns(UserWarning, match='arbitrary code'):
        assert load_checkpoint_file(path)['args'].lr == 0.1


@pytest.mark.slow
def test_test_tool_follows_its_advice_to_trust(reference_run, tiny_config,
                                               tmp_path):
    """The refusal tells users to set the variable; doing so works."""
    import argparse
    ckpt = load_checkpoint_file(
        osp.join(reference_run, f'iter_{MAX_ITERS}.pth'))
    ckpt['meta']['args'] = argparse.Namespace(note='needs a full unpickle')
    path = str(tmp_path / 'with_namespace.pth')
    torch.save(ckpt, path)
    cmd = [
        sys.executable, TEST, tiny_config, path, '--work-dir',
        str(tmp_path / 'test')
    ]
    refused = run(cmd, check=False)
    assert refused.returncode != 0
    assert f'{TRUST_ENV}=1' in refused.stdout
    env = dict(os.environ, **{TRUST_ENV: '1'})
    trusted = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT)
    assert trusted.returncode == 0, trusted.stdout[-2000:] + trusted.stderr
    assert 'coco/bbox_mAP' in trusted.stdout + trusted.stderr


# ---------------------------------------------------------------------------
# weights that cannot be right
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def small_model():
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_non_tensor_values_are_refused(small_model):
    state = _state(small_model)
    state['0.weight'] = state['0.weight'].numpy()
    with pytest.raises(
            CheckpointMismatchError,
            match=r'not tensors, e.g. 0.weight \(ndarray\)'):
        check_state_dict(small_model, state, 'x.pth')


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_weights_are_refused(small_model, bad):
    state = _state(small_model)
    state['0.bias'][0] = bad
    with pytest.raises(
            CheckpointMismatchError,
            match=r"'x.pth' has NaN or infinite values in 1 "
            r'weights, e.g. 0.bias'):
        check_state_dict(small_model, state, 'x.pth', require_all=False)


def test_dtype_and_shape_mismatch_are_refused(small_model):
    state = _state(small_model)
    state['0.weight'] = state['0.weight'].double()
    with pytest.raises(
            CheckpointMismatchError,
            match='0.weight: checkpoint torch.float64 vs model '
            'torch.float32'):
        check_state_dict(small_model, state, 'x.pth')
    state = _state(small_model)
    state['0.bias'] = torch.zeros(5)
    with pytest.raises(
            CheckpointMismatchError,
            match=r'0.bias: checkpoint \(5,\) vs model \(2,\)'):
        check_state_dict(small_model, state, 'x.pth', require_all=False)


def test_missing_weights_only_refused_when_all_are_required(small_model):
    state = _state(small_model)
    del state['0.bias']
    check_state_dict(small_model, state, 'x.pth', require_all=False)
    with pytest.raises(CheckpointMismatchError, match='missing from it'):
        check_state_dict(small_model, state, 'x.pth')


@pytest.mark.slow
def test_tools_refuse_nan_and_numpy_weights(reference_run, tiny_config,
                                            tmp_path):
    ckpt = load_checkpoint_file(
        osp.join(reference_run, f'iter_{MAX_ITERS}.pth'))
    key = next(k for k, v in ckpt['state_dict'].items()
               if v.is_floating_point())
    nan = dict(ckpt, state_dict=dict(ckpt['state_dict']))
    nan['state_dict'][key] = torch.full_like(nan['state_dict'][key],
                                             float('nan'))
    nan_path = str(tmp_path / 'nan.pth')
    torch.save(nan, nan_path)
    as_numpy = dict(
        ckpt, state_dict={k: v.numpy()
                          for k, v in ckpt['state_dict'].items()})
    np_path = str(tmp_path / 'numpy.pth')
    torch.save(as_numpy, np_path)
    cases = [
        ([TEST, tiny_config, nan_path], f'NaN or infinite values in 1 '
         f'weights, e.g. {key}'),
        ([TEST, tiny_config, np_path], 'not tensors'),
        ([TRAIN, tiny_config, '--cfg-options',
          f'load_from={nan_path}'], 'NaN or infinite'),
        ([TRAIN, tiny_config, '--resume', nan_path], 'NaN or infinite'),
    ]
    for i, (cmd, expected) in enumerate(cases):
        proc = run(
            [sys.executable] + cmd +
            ['--work-dir', str(tmp_path / f'w{i}')],
            check=False)
        assert proc.returncode != 0, cmd
        assert expected in proc.stdout, (cmd, proc.stdout[-2000:])
        assert 'Iter(' not in proc.stdout  # nothing ran


# ---------------------------------------------------------------------------
# outputs never replace inputs
# ---------------------------------------------------------------------------
def test_check_outputs(tmp_path):
    src = tmp_path / 'in.pth'
    src.write_bytes(b'x')
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    with pytest.raises(OutputPathError, match='is the input SRC'):
        check_outputs(dict(DST=str(src)), dict(SRC=str(src)))
    with pytest.raises(OutputPathError, match='is the input SRC'):
        check_outputs(dict(DST=str(link)), dict(SRC=str(src)), force=True)
    existing = tmp_path / 'out.pth'
    existing.write_bytes(b'y')
    with pytest.raises(OutputPathError, match='exists; pass --force'):
        check_outputs(dict(DST=str(existing)), dict(SRC=str(src)))
    check_outputs(dict(DST=str(existing)), dict(SRC=str(src)), force=True)
    check_outputs(
        dict(DST=str(tmp_path / 'new' / 'out.pth')), dict(SRC=str(src)))


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    import shutil
    path = tmp_path / 'ckpt.pth'
    atomic_write_bytes(path, b'old')
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, 'disk_usage',
                        lambda p: usage._replace(free=10))
    with pytest.raises(OSError, match=r"needs 0\.0 MB and 0\.0 MB are free"):
        atomic_write_bytes(path, b'x' * 100)
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['ckpt.pth']


def _converter(name):
    return osp.join(REPO_ROOT, 'tools', 'model_converters', name)


@pytest.mark.slow
def test_converters_never_write_over_their_inputs(reference_run, tiny_config,
                                                  tmp_path):
    import shutil
    ckpt = str(tmp_path / 'model.pth')
    shutil.copy(osp.join(reference_run, f'iter_{MAX_ITERS}.pth'), ckpt)
    cfg = str(tmp_path / 'model.py')
    shutil.copy(tiny_config, cfg)
    before = {p: open(p, 'rb').read() for p in (ckpt, cfg)}
    cases = [
        [_converter('adamixer_to_lors_det.py'), ckpt, ckpt],
        [_converter('lors_merge.py'), cfg, ckpt, ckpt],
        # the deploy config would be model.py, the input config
        [_converter('lors_merge.py'), cfg, ckpt,
         str(tmp_path / 'model.pth')],
        [_converter('lorita_compress.py'), cfg, ckpt, ckpt, '--rank', '2'],
    ]
    for cmd in cases:
        proc = run([sys.executable] + cmd, check=False)
        assert proc.returncode != 0, cmd
        assert 'writing it would destroy the input' in proc.stdout, \
            (cmd, proc.stdout[-1500:])
        assert 'Traceback' not in proc.stdout
    for p, data in before.items():
        with open(p, 'rb') as f:
            assert f.read() == data, p


# ---------------------------------------------------------------------------
# resume never restarts over existing work
# ---------------------------------------------------------------------------
def _fake_ckpt(path, it):
    torch.save(dict(meta=dict(iter=it), state_dict={'w': torch.ones(1)}), path)


def test_resume_choice(tmp_path):
    logs = []
    assert find_resume_checkpoint(str(tmp_path), logs.append) == (None, None)
    for it in (2, 4):
        _fake_ckpt(tmp_path / f'iter_{it}.pth', it)
    # no last_checkpoint
    path, ckpt = find_resume_checkpoint(str(tmp_path), logs.append)
    assert path == str(tmp_path / 'iter_4.pth') and ckpt['meta']['iter'] == 4
    assert 'does not exist' in logs[-1]
    # empty, and stale (names a file that is gone)
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text('')
    assert find_resume_checkpoint(str(tmp_path),
                                  logs.append)[0].endswith('iter_4.pth')
    assert 'is empty' in logs[-1]
    pointer.write_text(str(tmp_path / 'iter_6.pth'))
    assert find_resume_checkpoint(str(tmp_path),
                                  logs.append)[0].endswith('iter_4.pth')
    assert 'iter_6.pth' in logs[-1]
    # the newest is damaged: the one before it, saying so
    (tmp_path / 'iter_4.pth').write_bytes(b'PK\x03\x04 half')
    path, ckpt = find_resume_checkpoint(str(tmp_path), logs.append)
    assert path.endswith('iter_2.pth') and ckpt['meta']['iter'] == 2
    assert any('iter_4.pth' in m and 'does not load' in m for m in logs)
    # none loads: an error, not a fresh start
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    with pytest.raises(ResumeError, match='none of its checkpoints loads'):
        find_resume_checkpoint(str(tmp_path), logs.append)


@pytest.mark.slow
def test_fresh_start_over_checkpoints_is_refused(tmp_path, tiny_config):
    refuse_fresh_start(str(tmp_path))  # empty: fine
    _fake_ckpt(tmp_path / 'iter_2.pth', 2)
    with pytest.raises(ResumeError, match='already holds checkpoints'):
        refuse_fresh_start(str(tmp_path))
    proc = run(
        [sys.executable, TRAIN, tiny_config, '--work-dir',
         str(tmp_path)],
        check=False)
    assert proc.returncode != 0
    assert 'Pass --resume to continue' in proc.stdout
    assert (tmp_path / 'iter_2.pth').stat().st_size > 0


@pytest.mark.slow
def test_resume_without_last_checkpoint_continues_from_the_newest(
        reference_run, tiny_config, tmp_path):
    import shutil
    work_dir = tmp_path / 'run'
    shutil.copytree(reference_run, work_dir)
    os.remove(work_dir / 'last_checkpoint')
    ckpts = {
        f: (work_dir / f).read_bytes()
        for f in os.listdir(work_dir) if f.endswith('.pth')
    }
    assert set(ckpts) == {'iter_2.pth', f'iter_{MAX_ITERS}.pth'}
    proc = run([
        sys.executable, TRAIN, tiny_config, '--work-dir',
        str(work_dir), '--resume'
    ])
    assert f'resuming from {work_dir}/iter_{MAX_ITERS}.pth' in proc.stdout
    assert f'resumed epoch: 0, iter: {MAX_ITERS}' in proc.stdout
    assert 'resumed from None' not in proc.stdout
    for f, data in ckpts.items():  # nothing was overwritten
        assert (work_dir / f).read_bytes() == data, f


@pytest.mark.slow
def test_work_dir_lock(tmp_path):
    with WorkDirLock(str(tmp_path)) as lock:
        assert osp.isfile(lock.path)
        with pytest.raises(WorkDirBusyError, match=f'pid {os.getpid()}'):
            WorkDirLock(str(tmp_path)).acquire()
    assert not osp.exists(lock.path)
    # a dead process's lock is taken over, with a warning
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    import socket
    with open(lock.path, 'w') as f:
        f.write(f'{dead.pid} {socket.gethostname()}')
    with pytest.warns(UserWarning, match='no longer runs'):
        with WorkDirLock(str(tmp_path)):
            pass


@pytest.mark.slow
def test_second_run_in_a_live_work_dir_refuses_to_start(tmp_path, tiny_config):
    import socket
    (tmp_path /
     WorkDirLock.NAME).write_text(f'{os.getpid()} {socket.gethostname()}')
    proc = run(
        [sys.executable, TRAIN, tiny_config, '--work-dir',
         str(tmp_path)],
        check=False)
    assert proc.returncode != 0
    assert 'is in use by another run' in proc.stdout
    assert sorted(os.listdir(tmp_path)) == [WorkDirLock.NAME]


@pytest.mark.slow
def test_amp_without_cuda_is_one_clear_line(tmp_path, tiny_config):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: --amp is valid here')
    proc = run([
        sys.executable, TRAIN, tiny_config, '--amp', '--work-dir',
        str(tmp_path)
    ],
               check=False)
    assert proc.returncode != 0
    assert 'error: --amp needs a CUDA GPU' in proc.stdout
    assert 'Traceback' not in proc.stdout


@pytest.mark.slow
def test_checkpoint_hook_leaves_a_live_runs_partial_file(tmp_path):
    """Two runs in one work_dir: the second must not delete the partial
    checkpoint the first is writing (only those of dead processes)."""
    import logging

    from lors_det.engine import AtomicCheckpointHook
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    live = tmp_path / f'iter_4.pth.{os.getpid()}.partial'
    stale = tmp_path / f'iter_2.pth.{dead.pid}.partial'
    for p in (live, stale):
        p.write_bytes(b'PK\x03\x04 half')
    hook = AtomicCheckpointHook(interval=1)
    hook.out_dir = str(tmp_path)

    class _Runner:
        logger = logging.getLogger('test_partial')

    hook._remove_partials(_Runner())
    assert live.exists() and not stale.exists()
