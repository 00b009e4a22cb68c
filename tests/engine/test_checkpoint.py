"""Loading checkpoints: safe on torch >= 2.6, clear errors naming the file.

``lors_det.engine.checkpoint.load_checkpoint_file`` loads plain state dicts
and mmengine checkpoints with a restricted unpickler (no code execution),
refuses other pickles unless trusted, and turns truncated/corrupt files into
``CheckpointError`` naming the file.
``tools/test.py`` and ``tools/train.py`` use it (fail fast), and
``tools/test.py`` refuses a checkpoint of another architecture.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import CKPT_INTERVAL, MAX_ITERS, TEST, TRAIN, run
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint

from lors_det.engine.checkpoint import (CheckpointError,
                                        CheckpointMismatchError,
                                        UntrustedCheckpointError,
                                        load_checkpoint_file, read_once,
                                        register_checkpoint_loader)
from lors_det.engine.weights import check_checkpoint


@pytest.fixture(scope='module')
def mmengine_ckpt(reference_run):
    return osp.join(reference_run, f'iter_{CKPT_INTERVAL}.pth')


def _no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        warnings.filterwarnings('ignore', message='TypedStorage is deprecated')
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------
# valid files
# ---------------------------------------------------------------------------
def test_mmengine_checkpoint_loads_without_full_unpickle(mmengine_ckpt):
    # torch's weights_only loader (the default from torch 2.6) refuses it
    with pytest.raises(Exception, match='HistoryBuffer'):
        torch.load(mmengine_ckpt, map_location='cpu', weights_only=True)
    ckpt = _no_warnings(load_checkpoint_file, mmengine_ckpt)
    assert ckpt['meta']['iter'] == CKPT_INTERVAL
    assert {'state_dict', 'optimizer', 'message_hub', 'param_schedulers'} <= \
        set(ckpt)
    hub = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(hub).__name__ == 'HistoryBuffer' and hub.current() > 0


def test_plain_state_dict_and_numpy_meta_load(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save({'w': torch.arange(3.)}, path)
    assert torch.equal(
        _no_warnings(load_checkpoint_file, path)['w'], torch.arange(3.))
    path = tmp_path / 'numpy_meta.pth'
    torch.save(
        dict(
            state_dict={'w': torch.ones(1)},
            meta=dict(seed=np.int64(3), arr=np.arange(2))), path)
    meta = _no_warnings(load_checkpoint_file, path)['meta']
    assert meta['seed'] == 3 and meta['arr'].tolist() == [0, 1]


def test_registered_loader_makes_mmengine_work_with_weights_only_default(
        mmengine_ckpt, monkeypatch):
    """Simulate torch >= 2.6 (``weights_only`` defaults to True): mmengine's
    own loader fails on its checkpoints, the registered one does not.
    Importing lors_det registers it."""
    from mmengine.runner.checkpoint import load_from_local

    from lors_det.engine.checkpoint import _mmengine_local_loader
    assert CheckpointLoader._schemes[''] is _mmengine_local_loader
    real_load = torch.load

    def load_as_in_torch_2_6(*args, weights_only=None, **kwargs):
        if weights_only is None:
            weights_only = kwargs.get('pickle_module') is None
        return real_load(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, 'load', load_as_in_torch_2_6)
    schemes = dict(CheckpointLoader._schemes, **{'': load_from_local})
    monkeypatch.setattr(CheckpointLoader, '_schemes', schemes)
    with pytest.raises(Exception, match='Weights only load failed'):
        _load_checkpoint(mmengine_ckpt, map_location='cpu')
    register_checkpoint_loader()
    ckpt = _load_checkpoint(mmengine_ckpt, map_location='cpu')
    assert ckpt['meta']['iter'] == CKPT_INTERVAL


def test_read_once_serves_the_checkpoint_already_read(tmp_path):
    """tools/train.py reads a load_from/resume file once: mmengine's loader
    gets that object, once, and only while the file is unchanged."""
    path = str(tmp_path / 'a.pth')
    torch.save({'state_dict': {'w': torch.ones(2)}}, path)
    read = load_checkpoint_file(path)
    with read_once(path, read):
        assert CheckpointLoader.load_checkpoint(path, 'cpu') is read
        again = CheckpointLoader.load_checkpoint(path, 'cpu')  # the file
        assert again is not read and torch.equal(again['state_dict']['w'],
                                                 read['state_dict']['w'])
    with read_once(path, read):
        pass
    assert CheckpointLoader.load_checkpoint(path, 'cpu') is not read
    with read_once(path, read):
        torch.save({'state_dict': {'w': torch.zeros(3)}}, path)  # replaced
        assert CheckpointLoader.load_checkpoint(
            path, 'cpu')['state_dict']['w'].shape == (3, )


# ---------------------------------------------------------------------------
# bad files
# ---------------------------------------------------------------------------
def _bad_bytes(kind, good: bytes):
    if kind == 'truncated':
        return good[:len(good) // 2]
    if kind == 'empty':
        return b''
    if kind == 'html':
        return b'<html><body>502 Bad Gateway</body></html>'
    if kind == 'bit_flip':  # inside the first record, keeps the zip layout
        i = 200
        return good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:]
    raise ValueError(kind)


@pytest.mark.parametrize('kind', ['truncated', 'empty', 'html', 'bit_flip'])
def test_corrupt_file_error_names_the_file(mmengine_ckpt, tmp_path, kind):
    with open(mmengine_ckpt, 'rb') as f:
        good = f.read()
    path = str(tmp_path / f'{kind}.pth')
    with open(path, 'wb') as f:
        f.write(_bad_bytes(kind, good))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    assert path in str(info.value)
    expected = 'not a PyTorch checkpoint' if kind == 'html' else \
        'truncated or corrupt'
    assert expected in str(info.value)


def test_truncated_legacy_format_file(tmp_path):
    path = str(tmp_path / 'legacy.pth')
    torch.save({'w': torch.ones(100)},
               path,
               _use_new_zipfile_serialization=False)
    assert load_checkpoint_file(path)['w'].shape == (100, )
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) - 50])
    with pytest.raises(CheckpointError, match='truncated or corrupt') as info:
        load_checkpoint_file(path)
    assert path in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    path = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(path)


class _Evil:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker, ))


def test_code_executing_pickle_is_refused_unless_trusted(tmp_path):
    marker = str(tmp_path / 'code_ran')
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'x': _Evil(marker)}, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint_file(path)
    assert path in str(info.value) and 'mkdir' in str(info.value)
    assert not osp.exists(marker)  # nothing ran

    # a trusted file may need a full unpickle: allowed, with a warning
    path = str(tmp_path / 'namespace.pth')
    torch.save({'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UntrustedCheckpointError, match='Namespace'):
        load_checkpoint_file(path)
    with pytest.warns(UserWarning, match='can run arbitrary code'):
        assert load_checkpoint_file(path, trusted=True)['args'].lr == 0.1


# ---------------------------------------------------------------------------
# checkpoint vs model
# ---------------------------------------------------------------------------
def test_checkpoint_of_another_architecture_is_named(mmengine_ckpt,
                                                     tiny_config,
                                                     tiny_lors_config):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    ckpt = load_checkpoint_file(mmengine_ckpt)
    adamixer = MODELS.build(Config.fromfile(tiny_config).model)
    check_checkpoint(adamixer, ckpt, mmengine_ckpt)  # fits
    lors = MODELS.build(Config.fromfile(tiny_lors_config).model)
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint(lors, ckpt, mmengine_ckpt)
    msg = str(info.value)
    assert mmengine_ckpt in msg
    assert 'missing from it, e.g. decoder.mixing.' in msg
    assert 'another config' in msg


def test_the_check_neither_copies_nor_changes_the_model(monkeypatch):
    """The comparison reads the model's names, shapes and dtypes only: no
    deep copy (on a GPU it would double the memory), no load; the meta's
    config text is not read."""
    import copy

    from helpers import SYNTHETIC, build_model
    model = build_model(SYNTHETIC['lors'])
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def refuse(*args, **kwargs):
        raise AssertionError('the check copied or loaded the model')

    monkeypatch.setattr(copy, 'deepcopy', refuse)
    monkeypatch.setattr(model, 'load_state_dict', refuse)
    ckpt = dict(state_dict=state, meta=dict(cfg='mixing = dict(lorsa=None'))
    check_checkpoint(model, ckpt, 'x.pth')  # fits
    state['decoder.mixing.out_proj.shared_weight'] = torch.zeros(3, 3)
    with pytest.raises(
            CheckpointMismatchError,
            match=r'1 have another shape, e.g. decoder.mixing.'
            r'out_proj.shared_weight: checkpoint \(3, 3\)'):
        check_checkpoint(model, ckpt, 'x.pth')
    state['decoder.mixing.out_proj.shared_weight'] = torch.zeros(
        model.decoder.mixing.out_proj.shared_weight.shape, dtype=torch.float64)
    with pytest.raises(CheckpointMismatchError, match='another dtype'):
        check_checkpoint(model, ckpt, 'x.pth')


# ---------------------------------------------------------------------------
# the tools
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_tools_fail_fast_on_truncated_checkpoint(mmengine_ckpt, tiny_config,
                                                 tmp_path):
    bad = str(tmp_path / 'truncated.pth')
    with open(mmengine_ckpt, 'rb') as f:
        data = f.read()
    with open(bad, 'wb') as f:
        f.write(data[:len(data) // 3])
    for cmd in ([
            sys.executable, TEST, tiny_config, bad, '--work-dir',
            str(tmp_path / 'test')
    ], [
            sys.executable, TRAIN, tiny_config, '--resume', bad, '--work-dir',
            str(tmp_path / 'train')
    ]):
        proc = run(cmd, check=False)
        assert proc.returncode != 0
        assert f"checkpoint file '{bad}' is truncated or corrupt" in \
            proc.stdout
        # before the Runner was built (no environment dump, no model)
        assert 'Runtime environment' not in proc.stdout
        assert 'Traceback' not in proc.stdout


@pytest.mark.slow
def test_test_tool_refuses_checkpoint_of_another_architecture(
        reference_run, tiny_lors_config, tmp_path):
    ckpt = osp.join(reference_run, f'iter_{MAX_ITERS}.pth')
    proc = run([
        sys.executable, TEST, tiny_lors_config, ckpt, '--work-dir',
        str(tmp_path)
    ],
               check=False)
    assert proc.returncode != 0
    assert f"checkpoint file '{ckpt}' does not fit the model built from " \
        f"'{tiny_lors_config}'" in proc.stdout
    assert 'Iter(test)' not in proc.stdout  # nothing was evaluated
