"""LoRITa compression (tools/model_converters/lorita_compress.py,
lors_det/efficient/lorita_compress.py) and the tied-FFN configs.

The compression tests use the synthetic LoRITa config
(``configs/synthetic/adamixer-lorita_tiny_synthetic.py``: every decoder FFN
linear and every stage's mixing output linear is a product of 3 maps) with
randomised LoRITa factors, saved as an mmengine-style checkpoint.
"""
import glob
import importlib.util
import json
import math
import os.path as osp
import sys

import pytest
import torch
from helpers import REPO_ROOT, run

from lors_det.efficient import LoRITaLinear
from lors_det.efficient.lorita_compress import (LoRITaCompressError,
                                                check_value, compress_model,
                                                find_lorita_layers,
                                                model_params,
                                                ranks_for_global_ratio)
from lors_det.engine.checkpoint import CheckpointMismatchError
from lors_det.engine.convert import compress_checkpoint
from lors_det.engine.weights import check_checkpoint
from lors_det.models.param_counts import build_model

TOOL = osp.join(REPO_ROOT, 'tools', 'model_converters', 'lorita_compress.py')


def _load_tool(path):
    spec = importlib.util.spec_from_file_location('lorita_compress_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


format_report = _load_tool(TOOL).format_report  # the tool's table
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
LORITA_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                      'adamixer-lorita_tiny_synthetic.py')
PLAIN_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                     'adamixer_tiny_synthetic.py')
TIED_SYN_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                        'adamixer-tied_tiny_synthetic.py')
NUM_LORITA_LAYERS = 18  # 6 stages x (fc1, fc2) + 6 mixing out_proj
NUM_VAL_IMAGES = 8
TIMEOUT_S = 300


# ---------------------------------------------------------------------------
# helpers and fixtures
# ---------------------------------------------------------------------------
def _randomise(model, seed=0):
    """Random (not init-like) LoRITa factors and biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in find_lorita_layers(model).values():
            for w in layer.factors:
                w.copy_(
                    torch.randn(w.shape, generator=g) / math.sqrt(w.shape[1]))
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g))
    return model


def _inputs():
    return torch.randn(
        2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _outputs(model):
    model.eval()
    return [t.clone() for stage in model._forward(_inputs()) for t in stage]


def _assert_rel_close(after, before, tol=1e-4):
    assert len(after) == len(before)
    for i, (a, b) in enumerate(zip(after, before)):
        assert a.shape == b.shape, i
        err = (a - b).abs().max().item()
        scale = b.abs().max().item()
        assert err <= tol * scale, (i, err, scale)


def _save(model, path, **meta):
    torch.save(dict(meta=dict(meta), state_dict=model.state_dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def lorita_ckpt(tmp_path_factory):
    """(checkpoint path, outputs of the uncompressed model, its params)."""
    torch.manual_seed(0)
    model = _randomise(build_model(LORITA_CFG))
    path = _save(
        model,
        tmp_path_factory.mktemp('lorita') / 'random.pth',
        epoch=1,
        note='randomised')
    return path, _outputs(model), model_params(model)


@pytest.fixture(scope='module')
def shared_model():
    """One built LoRITa model reused by the tests that load the checkpoint
    into it first (loading adopts the factor shapes of the checkpoint, so a
    compressed model becomes uncompressed again)."""
    return build_model(LORITA_CFG)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from lors_det.datasets import make_synthetic_coco
    root = tmp_path_factory.mktemp('lorita_data')
    make_synthetic_coco(
        str(root / 'data'),
        num_train=4,
        num_val=NUM_VAL_IMAGES,
        img_size=64,
        seed=0,
        min_objects=1,
        empty_ratio=0.0)
    data_root = str(root / 'data') + '/'
    cfg = root / 'lorita_tiny_eval.py'
    cfg.write_text(
        f'_base_ = [{LORITA_CFG!r}]\n'
        f'data_root = {data_root!r}\n'
        'train_dataloader = dict(dataset=dict(data_root=data_root))\n'
        'val_dataloader = dict(batch_size=2, dataset=dict('
        "data_root=data_root, ann_file='annotations/instances_val.json'))\n"
        'test_dataloader = val_dataloader\n'
        "val_evaluator = dict(ann_file=data_root + "
        "'annotations/instances_val.json')\n"
        'test_evaluator = val_evaluator\n')
    return str(cfg)


def _run(cmd, check=True):
    res = run(cmd, check=check, timeout=TIMEOUT_S)
    return res.returncode, res.stdout


# ---------------------------------------------------------------------------
# (a) full rank is exact
# ---------------------------------------------------------------------------
def test_full_rank_compression_keeps_outputs(lorita_ckpt, shared_model,
                                             tmp_path):
    ckpt, before, _ = lorita_ckpt
    report, model = compress_checkpoint(
        LORITA_CFG,
        ckpt,
        str(tmp_path / 'full.pth'),
        'rank',
        64,
        model=shared_model)
    assert len(report.layers) == NUM_LORITA_LAYERS
    assert all(r.rank == r.max_rank == 64 and not r.clamped
               for r in report.layers)
    for layer in find_lorita_layers(model).values():
        assert layer.num_factors == 2
    _assert_rel_close(_outputs(model), before)


# ---------------------------------------------------------------------------
# (b) lower rank: counted exactly, strict load into a fresh model, runs
# ---------------------------------------------------------------------------
def test_low_rank_params_and_strict_reload(lorita_ckpt, shared_model,
                                           tmp_path):
    ckpt, before, params_before = lorita_ckpt
    out = str(tmp_path / 'r8.pth')
    report, model = compress_checkpoint(
        LORITA_CFG, ckpt, out, 'rank', 8, model=shared_model)
    assert report.model_params_before == params_before
    assert [r.rank for r in report.layers] == [8] * NUM_LORITA_LAYERS
    # reported reduction == real reduction == closed form
    reduction = report.model_params_before - report.model_params_after
    assert reduction == params_before - model_params(model)
    assert reduction == (
        report.lorita_params_before - report.lorita_params_after)
    expected_after = sum(8 * (r.in_features + r.out_features) + r.out_features
                         for r in report.layers)
    assert report.lorita_params_after == expected_after
    assert reduction > 0
    text = format_report(report)
    assert f'{report.model_params_before:,}' in text
    assert f'{report.model_params_after:,}' in text

    saved = torch.load(out, map_location='cpu')
    assert set(saved) == {'meta', 'state_dict'}
    info = saved['meta']['lorita_compress']
    assert info['method'] == 'rank' and info['value'] == 8
    assert info['ranks'] == {r.name: 8 for r in report.layers}
    assert saved['meta']['note'] == 'randomised'  # source meta kept

    fresh = build_model(LORITA_CFG)
    fresh.load_state_dict(saved['state_dict'], strict=True)
    assert model_params(fresh) == report.model_params_after
    after = _outputs(fresh)
    _assert_rel_close(after, _outputs(model), tol=1e-6)
    assert all(torch.isfinite(t).all() for t in after)
    # a rank-8 truncation of random factors does change the outputs
    assert any(not torch.allclose(a, b) for a, b in zip(after, before))


def test_rank_is_clamped_and_reported(lorita_ckpt, shared_model):
    ckpt, _, _ = lorita_ckpt
    report, _ = compress_checkpoint(
        LORITA_CFG, ckpt, None, 'rank', 1000, model=shared_model)
    assert all(r.clamped and r.rank == 64 for r in report.layers)
    assert any('clamped to 64' in n for n in report.notes)
    assert '(clamped)' in format_report(report)


# ---------------------------------------------------------------------------
# (c) energy
# ---------------------------------------------------------------------------
def test_energy_one_keeps_all_nonzero_singular_values(lorita_ckpt,
                                                      shared_model):
    ckpt, _, _ = lorita_ckpt
    model = shared_model
    model.load_state_dict(torch.load(ckpt)['state_dict'])
    layers = find_lorita_layers(model)
    # make some products exactly rank-deficient: zero rows of the last
    # factor give zero rows of the product
    deficient = {
        'decoder.stages.0.ffn.fc2': 16,
        'decoder.mixing.out_proj.layers.3': 40,
        'decoder.stages.2.ffn.fc1': 100
    }
    with torch.no_grad():
        for name, k in deficient.items():
            layers[name].factors[-1][:k] = 0
    expected = {}
    for name, layer in layers.items():
        s = torch.linalg.svdvals(layer.fold().detach().double())
        expected[name] = int((s > 1e-6 * s[0]).sum())
    assert expected['decoder.stages.0.ffn.fc2'] == 64 - 16
    assert expected['decoder.mixing.out_proj.layers.3'] == 64 - 40
    assert expected['decoder.stages.2.ffn.fc1'] == 64  # 156 rows still span
    before = _outputs(model)
    report = compress_model(model, 'energy', 1.0)
    assert report.ranks == expected
    _assert_rel_close(_outputs(model), before)


def test_energy_below_one_is_smallest_rank(lorita_ckpt, shared_model):
    ckpt, _, _ = lorita_ckpt
    model = shared_model
    model.load_state_dict(torch.load(ckpt)['state_dict'])
    svals = {
        n: torch.linalg.svdvals(m.fold().detach().double())
        for n, m in find_lorita_layers(model).items()
    }
    report = compress_model(model, 'energy', 0.9)
    for row in report.layers:
        sq = svals[row.name].pow(2)
        frac = sq.cumsum(0) / sq.sum()
        assert frac[row.rank - 1] >= 0.9 - 1e-9
        assert row.rank == 1 or frac[row.rank - 2] < 0.9
        assert row.energy_kept == pytest.approx(float(frac[row.rank - 1]))
    assert report.model_params_after < report.model_params_before


# ---------------------------------------------------------------------------
# global budget
# ---------------------------------------------------------------------------
def test_global_ratio_pure():
    a = torch.tensor([10.0, 5.0, 1.0, 0.5])  # normalised 1, .5, .1, .05
    b = torch.tensor([2.0, 1.8, 1.6, 0.2])  # normalised 1, .9, .8, .1
    assert ranks_for_global_ratio([a, b], 1.0) == [4, 4]
    assert ranks_for_global_ratio([a, b], 0.5) == [1, 3]  # 1,1,.9,.8
    assert ranks_for_global_ratio([a, b], 5 / 8) == [2, 3]
    # raw magnitudes would keep a's 10, 5 and b's 2, 1.8 instead
    assert ranks_for_global_ratio([a, b], 0.125) == [1, 1]  # min rank 1
    zero = torch.zeros(3)
    assert ranks_for_global_ratio([zero, b], 0.5) == [1, 4]  # 4 of 7


def test_global_ratio_on_model(lorita_ckpt, shared_model):
    ckpt, _, _ = lorita_ckpt
    report, _ = compress_checkpoint(
        LORITA_CFG, ckpt, None, 'ratio', 0.25, model=shared_model)
    kept, total = report.singular_values_kept
    assert total == 64 * NUM_LORITA_LAYERS
    assert kept == math.ceil(0.25 * total)
    assert all(r.rank >= 1 for r in report.layers)
    report, _ = compress_checkpoint(
        LORITA_CFG, ckpt, None, 'ratio', 1.0, model=shared_model)
    assert all(r.rank == 64 for r in report.layers)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('method,value', [('energy', 0), ('energy', 1.5),
                                          ('energy', float('nan')),
                                          ('ratio', -0.1), ('ratio', 2),
                                          ('ratio', 'x'), ('rank', 0),
                                          ('rank', 2.5), ('svd', 1)])
def test_bad_values(method, value):
    with pytest.raises(LoRITaCompressError, match=f'{method}|method'):
        check_value(method, value)


def test_config_without_lorita_layers(lorita_ckpt):
    ckpt, _, _ = lorita_ckpt
    with pytest.raises(LoRITaCompressError, match='no LoRITaLinear'):
        compress_checkpoint(PLAIN_CFG, ckpt, None, 'energy', 0.9)


def test_checkpoint_not_matching_config(lorita_ckpt, shared_model, tmp_path):
    ckpt, _, _ = lorita_ckpt
    sd = torch.load(ckpt)['state_dict']
    sd.pop('decoder.stages.1.ffn.fc2.bias')
    sd['decoder.stages.1.ffn.fc2.weight'] = torch.zeros(64, 256)
    bad = tmp_path / 'bad.pth'
    torch.save(dict(state_dict=sd), bad)
    with pytest.raises(CheckpointMismatchError) as e:
        compress_checkpoint(
            LORITA_CFG, str(bad), None, 'rank', 4, model=shared_model)
    msg = str(e.value)
    assert str(bad) in msg
    assert 'missing from it, e.g. decoder.stages.1.ffn.fc2.bias' in msg
    assert 'not in the model, e.g. decoder.stages.1.ffn.fc2.weight' in msg
    # a size mismatch is named too
    sd = torch.load(ckpt)['state_dict']
    sd['decoder.stages.0.ffn_norm.weight'] = torch.zeros(3)
    torch.save(dict(state_dict=sd), bad)
    with pytest.raises(
            CheckpointMismatchError,
            match=r'ffn_norm.weight: checkpoint \(3,\)'):
        compress_checkpoint(
            LORITA_CFG, str(bad), None, 'rank', 4, model=shared_model)


# ---------------------------------------------------------------------------
# (d) CLI end to end, then tools/test.py with the same config
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_then_test_tool(lorita_ckpt, tiny_data, tmp_path):
    ckpt, _, _ = lorita_ckpt
    out = str(tmp_path / 'compressed.pth')
    _, stdout = _run(
        [sys.executable, TOOL, tiny_data, ckpt, out, '--energy', '0.9'])
    assert 'decoder.mixing.out_proj.layers.5' in stdout
    assert 'whole model:' in stdout and 'LoRITa layers (18)' in stdout
    meta = torch.load(out)['meta']['lorita_compress']
    assert meta['method'] == 'energy' and meta['value'] == 0.9
    assert len(meta['ranks']) == NUM_LORITA_LAYERS
    assert meta['model_params_after'] < meta['model_params_before']

    work_dir = str(tmp_path / 'test')
    _, stdout = _run(
        [sys.executable, TEST, tiny_data, out, '--work-dir', work_dir])
    assert 'coco/bbox_mAP' in stdout
    metrics = None
    for path in glob.glob(osp.join(work_dir, '*', '*.json')):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'coco/bbox_mAP' in rec:
                    metrics = rec
    assert metrics is not None
    # pycocotools gives -1 when nothing could be evaluated
    assert 0.0 <= metrics['coco/bbox_mAP'] <= metrics['coco/bbox_mAP_50'] \
        <= 1.0


@pytest.mark.slow
def test_cli_errors(tmp_path, lorita_ckpt):
    ckpt, _, _ = lorita_ckpt
    out = str(tmp_path / 'x.pth')
    code, stdout = _run(
        [sys.executable, TOOL, LORITA_CFG, ckpt, out, '--energy', '1.5'],
        check=False)
    assert code != 0 and '--energy must be in (0, 1]' in stdout
    code, stdout = _run(
        [sys.executable, TOOL, PLAIN_CFG, ckpt, out, '--ratio', '0.5'],
        check=False)
    assert code != 0 and 'no LoRITaLinear layers' in stdout
    assert not osp.exists(out)


def test_compressed_checkpoint_fits_the_config_it_was_trained_with(
        lorita_ckpt, tmp_path):
    """The checkpoint-vs-model comparison that tools/test.py makes before
    loading accepts a compressed checkpoint for its config (LoRITa layers
    adopt the compressed factor shapes while loading) and still refuses a
    wrong shape in it."""
    ckpt, _, _ = lorita_ckpt
    out = str(tmp_path / 'r4.pth')
    compress_checkpoint(LORITA_CFG, ckpt, out, 'rank', 4)
    saved = torch.load(out)
    model = build_model(LORITA_CFG)
    before = {k: v.shape for k, v in model.state_dict().items()}
    check_checkpoint(model, saved, out)
    assert {k: v.shape for k, v in model.state_dict().items()} == before
    saved['state_dict']['decoder.stages.0.ffn.fc1.factors.0'] = torch.zeros(
        3, 3)
    with pytest.raises(CheckpointMismatchError, match='ffn.fc1.factors.0'):
        check_checkpoint(model, saved, out)


def test_lorita_load_adopts_only_valid_shapes_and_keeps_dtype():
    """LoRITaLinear._load_from_state_dict adopts compressed shapes (in the
    module's dtype) but not the factors of a layer of another size."""
    src = LoRITaLinear(20, 10, num_factors=3).double()
    src.compress(4)
    dst = LoRITaLinear(20, 10, num_factors=3).double()
    dst.load_state_dict(src.state_dict(), strict=True)
    assert [w.dtype for w in dst.factors] == [torch.float64] * 2
    x = torch.randn(3, 20, dtype=torch.float64)
    torch.testing.assert_close(dst(x), src(x))
    other = LoRITaLinear(40, 10, num_factors=3)  # in = 40, not 20
    layer = LoRITaLinear(20, 10, num_factors=3)
    with pytest.raises(RuntimeError, match='size mismatch for factors.0'):
        layer.load_state_dict(other.state_dict())
    assert not layer.is_valid_chain([(4, 40), (10, 4)])
    assert layer.is_valid_chain([(4, 20), (10, 4)])
    assert layer.is_valid_chain([(10, 20)])


# ---------------------------------------------------------------------------
# tied FFN configs
# ---------------------------------------------------------------------------
def _ffn_weights(model):
    return sum(p.numel() for n, p in model.decoder.stages.named_parameters()
               if '.ffn.' in n and n.endswith('weight'))


def _ffn_params(model):
    return sum(p.numel() for n, p in model.decoder.stages.named_parameters()
               if '.ffn.' in n)


def test_tied_config_halves_ffn_weights():
    plain = build_model(
        osp.join(REPO_ROOT,
                 'configs/adamixer/adamixer-2x64_r50_8xb2-1x_coco.py'))
    tied = build_model(
        osp.join(REPO_ROOT,
                 'configs/tied/adamixer-tied-ffn_r50_8xb2-1x_coco.py'))
    assert _ffn_weights(tied) * 2 == _ffn_weights(plain) == 6 * 2 * 256 * 2048
    # biases are kept (2048 + 256 per stage in both)
    assert _ffn_params(plain) - _ffn_params(tied) == 6 * 256 * 2048
    assert model_params(plain) - model_params(tied) == 6 * 256 * 2048
    assert all(hasattr(s.ffn, 'tied') for s in tied.decoder.stages)


def test_tied_lors_config_builds():
    from lors_det.lors import LORSAGenerator, LORSTLinear
    model = build_model(
        osp.join(REPO_ROOT,
                 'configs/tied/adamixer-lors-tied-ffn_r50_8xb2-1x_coco.py'))
    assert isinstance(model.decoder.mixing.generator, LORSAGenerator)
    assert isinstance(model.decoder.mixing.out_proj, LORSTLinear)
    assert all(
        hasattr(s.ffn, 'tied') and not hasattr(s.ffn, 'fc1')
        for s in model.decoder.stages)
    assert not any(isinstance(m, LoRITaLinear) for m in model.modules())


def test_tied_and_lorita_together_raises():
    from mmengine.config import Config
    cfg = Config.fromfile(TIED_SYN_CFG)
    cfg.model.decoder.stage.ffn.lorita = dict(num_factors=3)
    with pytest.raises(ValueError, match=r'tied.*lorita'):
        build_model(cfg)
