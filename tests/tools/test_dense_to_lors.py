"""tools/model_converters/dense_to_lors.py: a trained dense checkpoint in,
a LORS checkpoint (and, with new ranks, its config) out; the report; the
one-line refusals of inputs that do not fit."""
import os.path as osp
import sys

import pytest
import torch
from helpers import REPO_ROOT, SYNTHETIC, run
from mmengine.config import Config

from lors_det.engine.checkpoint import CheckpointMismatchError
from lors_det.engine.fileio import OutputPathError
from lors_det.engine.from_dense import convert_dense_checkpoint
from lors_det.engine.weights import load_weights
from lors_det.lors.from_dense import FromDenseError
from lors_det.models.from_dense import ConfigMismatchError
from lors_det.models.param_counts import build_model

TOOL = osp.join(REPO_ROOT, 'tools', 'model_converters', 'dense_to_lors.py')
DENSE = osp.join(REPO_ROOT, SYNTHETIC['adamixer'])
LORS = osp.join(REPO_ROOT, SYNTHETIC['lors'])


@pytest.fixture(scope='module')
def dense_ckpt(tmp_path_factory):
    """A 'trained' dense tiny AdaMixer: random generators (they are zero at
    init), saved as mmengine does."""
    torch.manual_seed(0)
    model = build_model(DENSE)
    with torch.no_grad():
        for layer in model.decoder.mixing.generator.layers:
            layer.weight.normal_(std=0.05)
    path = tmp_path_factory.mktemp('dense') / 'dense.pth'
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=dict(classes=('a', 'b', 'c')))), path)
    return str(path)


def quiet(*_):
    pass


@pytest.mark.slow
def test_cli_converts_reports_and_the_output_loads(dense_ckpt, tmp_path):
    out = str(tmp_path / 'lors.pth')
    res = run([sys.executable, TOOL, DENSE, dense_ckpt, LORS, out])
    text = res.stdout
    assert 'rel. error' in text and 'energy kept' in text
    rows = [
        ln for ln in text.splitlines() if ln.startswith('decoder.mixing') and (
            '(LORSA)' in ln or '(LORST)' in ln)
    ]
    assert len(rows) == 12  # 6 stages x (generator, out_proj)
    assert 'whole model' in text and 'model.decoder.mixing.lorsa rank=8' in \
        text
    model = build_model(LORS)
    ckpt = load_weights(model, out, config=LORS)  # every weight, checked
    meta = ckpt['meta']
    assert meta['dataset_meta'] == dict(classes=('a', 'b', 'c'))
    info = meta['dense_to_lors']
    assert info['ranks'] == {
        'model.decoder.mixing.lorsa': 8,
        'model.decoder.mixing.lorst': 4
    }
    assert len(info['layers']['decoder.mixing.generator']) == 6
    # refusals, each one line: OUT exists, OUT is an input
    for args, msg in (([out], "OUT '%s' exists; pass --force" % out),
                      ([dense_ckpt], 'is the input DENSE_CKPT')):
        res = run([sys.executable, TOOL, DENSE, dense_ckpt, LORS, *args],
                  check=False)
        assert res.returncode != 0
        last = res.stdout.strip().splitlines()[-1]
        assert last.startswith('error: ') and msg in last


@pytest.mark.slow
def test_cli_refuses_a_checkpoint_of_another_config(dense_ckpt, tmp_path):
    lors_ckpt = str(tmp_path / 'lors_trained.pth')
    torch.save(dict(state_dict=build_model(LORS).state_dict()), lors_ckpt)
    res = run([
        sys.executable, TOOL, DENSE, lors_ckpt, LORS,
        str(tmp_path / 'o.pth')
    ],
              check=False)
    last = res.stdout.strip().splitlines()[-1]
    assert res.returncode != 0 and last.startswith('error: ')
    assert lors_ckpt in last and 'does not fit the model' in last
    assert not osp.exists(tmp_path / 'o.pth')


@pytest.mark.slow
def test_energy_picks_ranks_and_writes_their_config(dense_ckpt, tmp_path):
    out = str(tmp_path / 'e.pth')
    result = convert_dense_checkpoint(
        DENSE, dense_ckpt, LORS, out, energy=0.3, log=quiet)
    assert result.changed and result.out_config == str(tmp_path / 'e.py')
    for stack in result.stacks:
        assert min(f.energy_kept for f in stack.fits) >= 0.3
    cfg = Config.fromfile(result.out_config)
    mixing = cfg.model.decoder.mixing
    assert mixing.lorsa.rank == result.ranks['model.decoder.mixing.lorsa']
    assert mixing.lorst.rank == result.ranks['model.decoder.mixing.lorst']
    assert mixing.lorsa.num_factors == [1, 1, 2, 2, 3, 3]  # kept
    load_weights(build_model(cfg), out)
    # one rank lower would not reach it (the smallest rank is chosen)
    lower = convert_dense_checkpoint(
        DENSE,
        dense_ckpt,
        LORS,
        str(tmp_path / 'l.pth'),
        rank=result.ranks['model.decoder.mixing.lorst'] - 1,
        log=quiet)
    lorst = [s for s in lower.stacks if s.kind == 'LORST'][0]
    assert min(f.energy_kept for f in lorst.fits) < 0.3


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(rank=17), FromDenseError, r'--rank 17 is larger than '
     r'decoder.mixing.generator allows \(model.decoder.mixing.lorsa: '
     r'expected rank <= 16\)'),
    (dict(energy=1.5), FromDenseError, r'--energy must be in \(0, 1\]'),
    (dict(rank=2, energy=0.5), FromDenseError, 'not both'),
])
def test_bad_ranks_are_refused(dense_ckpt, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        convert_dense_checkpoint(
            DENSE,
            dense_ckpt,
            LORS,
            str(tmp_path / 'x.pth'),
            log=quiet,
            **kwargs)
    assert not osp.exists(tmp_path / 'x.pth')


def test_configs_that_do_not_match_are_refused(dense_ckpt, tmp_path):
    other = tmp_path / 'lors_8points.py'
    other.write_text(f'_base_ = {LORS!r}\n'
                     'model = dict(decoder=dict(in_points=8))\n')
    with pytest.raises(
            ConfigMismatchError,
            match='decoder.mixing.generator:'
            ' the dense layers are Linear'):
        convert_dense_checkpoint(
            DENSE, dense_ckpt, str(other), str(tmp_path / 'x.pth'), log=quiet)
    with pytest.raises(ConfigMismatchError, match='already builds a LORS'):
        convert_dense_checkpoint(
            LORS,
            _lors_ckpt(tmp_path),
            LORS,
            str(tmp_path / 'y.pth'),
            log=quiet)
    with pytest.raises(OutputPathError, match='is the input LORS_CONFIG'):
        convert_dense_checkpoint(DENSE, dense_ckpt, LORS, LORS, log=quiet)
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        convert_dense_checkpoint(
            DENSE,
            _lors_ckpt(tmp_path),
            LORS,
            str(tmp_path / 'z.pth'),
            log=quiet)


def _lors_ckpt(tmp_path):
    path = tmp_path / 'lors_model.pth'
    if not path.exists():
        torch.save(dict(state_dict=build_model(LORS).state_dict()), path)
    return str(path)


def test_lors_wrapper_checkpoint_converts_with_energy_ranks(tmp_path):
    """Sparse R-CNN (tiny): the mmdet detector's checkpoint -> its
    LORSWrapper config; --energy writes a config whose share list carries
    the chosen ranks, and the checkpoint loads into its model."""
    sparse = osp.join(REPO_ROOT, 'projects', 'lors_mmdet', 'configs',
                      'synthetic', 'sparse-rcnn-lors_tiny_synthetic.py')
    lors_cfg = Config.fromfile(sparse)
    dense_cfg = Config(
        dict(
            model=lors_cfg.model.detector,
            custom_imports=lors_cfg.custom_imports))
    dense_path = str(tmp_path / 'sparse_dense.py')
    dense_cfg.dump(dense_path)
    torch.manual_seed(0)
    dense = build_model(dense_path)
    ckpt = str(tmp_path / 'sparse_dense.pth')
    torch.save(dict(state_dict=dense.state_dict()), ckpt)
    out = str(tmp_path / 'sparse_lors.pth')
    result = convert_dense_checkpoint(
        dense_path, ckpt, sparse, out, energy=0.3, log=quiet)
    assert set(
        result.ranks) == {'model.share[0].lorsa', 'model.share[0].lorst'}
    cfg = Config.fromfile(result.out_config)
    share = cfg.model.share[0]
    assert share.lorsa.rank == result.ranks['model.share[0].lorsa']
    assert share.lorst.rank == result.ranks['model.share[0].lorst']
    assert share.lorsa.num_factors == [1, 2]
    assert cfg.model.type == 'LORSWrapper'
    load_weights(build_model(cfg), out)
    assert len(result.stacks) == 4 and result.lors_params < \
        result.dense_params
