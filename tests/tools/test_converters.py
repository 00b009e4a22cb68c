"""Round trip of the official-checkpoint converters.

tools/model_converters/adamixer_to_lors_det.py and lors_to_lors_det.py map
mmdet 2.x official keys to ours (:mod:`lors_det.utils.convert`). Here the
INVERSE is written independently, from the official classes' attribute
names (MCG-NJU/AdaMixer ``QueryBased`` -> ``rpn_head`` =
``InitialQueryGenerator``, ``roi_head.bbox_head.{i}`` =
``AdaMixerDecoderStage`` with ``attention.attn`` (mmcv MultiheadAttention
wrapping ``nn.MultiheadAttention``), ``ffn.layers.0.0`` / ``ffn.layers.1``
(mmcv FFN), ``sampling_n_mixing`` = ``AdaptiveSamplingMixing``
(``sampling_offset_generator`` Sequential, ``adaptive_mixing`` =
``AdaptiveMixing`` with ``parameter_generator`` Sequential and ``out_proj``,
``norm``); li-jl16/LORS: stages with ``sampling`` = ``AdaptiveSampling`` and
one ``roi_head.adaptive_mixing`` = ``FactorizedAdaptiveMixing``), with the
official tensor shapes asserted. A randomised model of ours is written out
in that layout as an mmdet 2.x checkpoint, converted by the CLI, loaded back
strictly, and must give identical tensors and identical outputs. The
mixing is also recomputed from the official-layout tensors with the official
forward math (reshape / split / low-rank products as in the official code)
to check that the layouts, not just the names, agree.
"""
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO_ROOT

from lors_det.engine.checkpoint import CheckpointMismatchError
from lors_det.engine.convert import convert_checkpoint_file
from lors_det.models.official_keys import (ConversionError,
                                           convert_adamixer_state_dict,
                                           convert_lors_state_dict)
from lors_det.models.param_counts import build_model

CONVERTERS = {
    'adamixer':
    osp.join(REPO_ROOT, 'tools', 'model_converters',
             'adamixer_to_lors_det.py'),
    'lors':
    osp.join(REPO_ROOT, 'tools', 'model_converters', 'lors_to_lors_det.py'),
}
CONFIGS = {
    'adamixer':
    osp.join(REPO_ROOT, 'configs', 'synthetic', 'adamixer_tiny_synthetic.py'),
    'lors':
    osp.join(REPO_ROOT, 'configs', 'synthetic',
             'adamixer-lors_tiny_synthetic.py'),
}
# the tiny synthetic configs' decoder (see configs/synthetic)
C, HEADS, FF, NUM_CLASSES, N_STAGES = 64, 4, 256, 3, 6
G, P_IN, P_OUT = 2, 16, 32
c = C // G
LORS_R, LORS_K, LORS_R_OUT = 8, [1, 1, 2, 2, 3, 3], 4


# ---------------------------------------------------------------------------
# the official layout, written from the official module structure
# ---------------------------------------------------------------------------
def _wb(prefix):
    return [f'{prefix}.weight', f'{prefix}.bias']


def official_stage_keys(lors):
    """Official ``AdaMixerDecoderStage`` parameter names -> shapes (the
    mixing of the AdaMixer stage included, the LORS stage has none)."""
    shapes = OrderedDict()
    shapes['attention.attn.in_proj_weight'] = (3 * C, C)
    shapes['attention.attn.in_proj_bias'] = (3 * C, )
    shapes['attention.attn.out_proj.weight'] = (C, C)
    shapes['attention.attn.out_proj.bias'] = (C, )
    for n in ('attention_norm', 'ffn_norm', 'cls_fcs.1', 'reg_fcs.1'):
        shapes[f'{n}.weight'] = shapes[f'{n}.bias'] = (C, )
    shapes['ffn.layers.0.0.weight'] = (FF, C)
    shapes['ffn.layers.0.0.bias'] = (FF, )
    shapes['ffn.layers.1.weight'] = (C, FF)
    shapes['ffn.layers.1.bias'] = (C, )
    for n in ('cls_fcs.0', 'reg_fcs.0'):
        shapes[f'{n}.weight'] = (C, C)
        shapes[f'{n}.bias'] = (C, )
    shapes['fc_cls.weight'] = (NUM_CLASSES, C)
    shapes['fc_cls.bias'] = (NUM_CLASSES, )
    shapes['fc_reg.weight'] = (4, C)
    shapes['fc_reg.bias'] = (4, )
    shapes['iof_tau'] = (HEADS, )
    sampling = 'sampling' if lors else 'sampling_n_mixing'
    shapes[f'{sampling}.sampling_offset_generator.0.weight'] = (G * P_IN * 3,
                                                                C)
    shapes[f'{sampling}.sampling_offset_generator.0.bias'] = (G * P_IN * 3, )
    if not lors:
        gen = G * (c * c + P_OUT * P_IN)
        am = 'sampling_n_mixing.adaptive_mixing'
        shapes[f'{am}.parameter_generator.0.weight'] = (gen, C)
        shapes[f'{am}.parameter_generator.0.bias'] = (gen, )
        shapes[f'{am}.out_proj.weight'] = (C, G * P_OUT * c)
        shapes[f'{am}.out_proj.bias'] = (C, )
        shapes['sampling_n_mixing.norm.weight'] = (C, )
        shapes['sampling_n_mixing.norm.bias'] = (C, )
    return shapes


def official_lors_mixing_keys():
    """Official ``FactorizedAdaptiveMixing`` parameter names -> shapes."""
    shapes = OrderedDict()
    gen = G * (c * c + P_OUT * P_IN)
    shapes['common_parameter_generator.weight'] = (gen, C)
    shapes['common_parameter_generator.bias'] = (gen, )
    r = LORS_R
    for i, k in enumerate(LORS_K):
        shapes[f'ml_parameters.{i}'] = (G * k, c, r)
        shapes[f'mr_parameters.{i}'] = (G * k, r, c)
        shapes[f'sl_parameters.{i}'] = (G * k, P_OUT, r)
        shapes[f'sr_parameters.{i}'] = (G * k, r, P_IN)
        shapes[f'private_parameter_generator.{i}.weight'] = (2 * G * k * r * r,
                                                             C)
        shapes[f'private_parameter_generator.{i}.bias'] = (2 * G * k * r * r, )
        shapes[f'out_weight_add_A.{i}'] = (LORS_R_OUT, G * P_OUT * c)
        shapes[f'out_weight_add_B.{i}'] = (C, LORS_R_OUT)
        shapes[f'out_weight_bias.{i}'] = (C, )
        shapes[f'out_norm.{i}.weight'] = shapes[f'out_norm.{i}.bias'] = (C, )
    shapes['base_out_proj.weight'] = (C, G * P_OUT * c)
    return shapes


def _ours_for_official_stage_key(i, key):
    """Where our model keeps the official stage-i tensor ``key``."""
    d = f'decoder.stages.{i}.'
    if key.startswith('attention.attn.'):
        return d + 'attention.' + key[len('attention.attn.'):]
    if key.startswith('ffn.layers.0.0.'):
        return d + 'ffn.fc1.' + key.rsplit('.', 1)[1]
    if key.startswith('ffn.layers.1.'):
        return d + 'ffn.fc2.' + key.rsplit('.', 1)[1]
    if key.endswith('sampling_offset_generator.0.weight') or key.endswith(
            'sampling_offset_generator.0.bias'):
        name = key.rsplit('.', 1)[1]
        return d + 'sampling.sampling_offset_generator.' + name
    am = 'sampling_n_mixing.adaptive_mixing.'
    if key.startswith(am + 'parameter_generator.0.'):
        return f'decoder.mixing.generator.layers.{i}.' + key.rsplit('.', 1)[1]
    if key.startswith(am + 'out_proj.'):
        return f'decoder.mixing.out_proj.layers.{i}.' + key.rsplit('.', 1)[1]
    if key.startswith('sampling_n_mixing.norm.'):
        return f'decoder.mixing.norms.{i}.' + key.rsplit('.', 1)[1]
    return d + key  # attention_norm, ffn_norm, iof_tau, *_fcs, fc_cls/reg


def _ours_for_official_mixing_key(key):
    """Where our model keeps ``roi_head.adaptive_mixing.<key>``."""
    name, rest = key.split('.', 1)
    gen, out = 'decoder.mixing.generator.', 'decoder.mixing.out_proj.'
    table = {
        'common_parameter_generator': gen + 'shared_generator.',
        'private_parameter_generator': gen + 'private_generators.',
        'ml_parameters': gen + 'left_factors.0.',
        'mr_parameters': gen + 'right_factors.0.',
        'sl_parameters': gen + 'left_factors.1.',
        'sr_parameters': gen + 'right_factors.1.',
        'out_weight_add_A': out + 'private_A.',
        'out_weight_add_B': out + 'private_B.',
        'out_weight_bias': out + 'private_bias.',
        'out_norm': 'decoder.mixing.norms.',
    }
    if key == 'base_out_proj.weight':
        return out + 'shared_weight'
    return table[name] + rest


def to_official(ours, lors):
    """Our state dict -> the official mmdet 2.x layout (a bijection)."""
    official, used = OrderedDict(), set()

    def put(off_key, our_key, shape=None):
        value = ours[our_key]
        if shape is not None:
            assert tuple(value.shape) == tuple(shape), (off_key, our_key,
                                                        value.shape, shape)
        assert off_key not in official and our_key not in used
        official[off_key] = value.clone()
        used.add(our_key)

    for k in ours:
        if k.startswith('backbone.') or k.startswith('neck.'):
            put(k, k)  # mmdet 2.x ResNet / ChannelMapping names
    put('rpn_head.init_proposal_bboxes.weight',
        'query_generator.init_proposal_bboxes.weight', (20, 4))
    put('rpn_head.init_content_features.weight',
        'query_generator.init_content_features.weight', (20, C))
    for i in range(N_STAGES):
        for key, shape in official_stage_keys(lors).items():
            put(f'roi_head.bbox_head.{i}.{key}',
                _ours_for_official_stage_key(i, key), shape)
    if lors:
        for key, shape in official_lors_mixing_keys().items():
            put(f'roi_head.adaptive_mixing.{key}',
                _ours_for_official_mixing_key(key), shape)
    assert used == set(ours), f'not placed: {sorted(set(ours) - used)}'
    return official


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
@torch.no_grad()
def randomise(model, seed=0):
    """Every tensor of the state dict random and non-zero everywhere
    (LORS private B, cores' generators, biases included), moderate scale."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            t.fill_(3)  # num_batches_tracked
            continue
        mag = torch.rand(t.shape, generator=gen) + 0.5  # [0.5, 1.5)
        sign = torch.randint(0, 2, t.shape, generator=gen) * 2 - 1
        if name.endswith('init_proposal_bboxes.weight'):
            t.copy_(0.3 + 0.4 * torch.rand(t.shape, generator=gen))
        elif name.endswith('running_var'):
            t.copy_(mag)
        elif t.dim() >= 2:
            t.copy_(sign * mag / (t[0].numel()**0.5))
        else:
            t.copy_(sign * mag * 0.2)
    for name, t in model.state_dict().items():
        assert (t != 0).all(), f'{name} has zeros'


def make_checkpoint(tmp_path, kind, seed=0):
    model = build_model(CONFIGS[kind])
    randomise(model, seed)
    model.eval()
    official = to_official(model.state_dict(), lors=kind == 'lors')
    src = str(tmp_path / f'official_{kind}.pth')
    torch.save(
        dict(
            state_dict=official,
            meta=dict(
                mmdet_version='2.19.0',
                epoch=12,
                CLASSES=('circle', 'square', 'triangle'))), src)
    return model, official, src


def run_cli(kind, *args):
    return subprocess.run([sys.executable, CONVERTERS[kind], *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)


def official_adamixer_mixing(sd, i, x, query):
    """Official AdaptiveMixing.forward + AdaptiveSamplingMixing.norm."""
    p = f'roi_head.bbox_head.{i}.sampling_n_mixing.'
    B, N = query.shape[:2]
    params = F.linear(
        query, sd[p + 'adaptive_mixing.parameter_generator.0.'
                  'weight'],
        sd[p + 'adaptive_mixing.parameter_generator.0.bias'])
    params = params.reshape(B * N, G, -1)
    M, S = params.split([c * c, P_OUT * P_IN], 2)
    M = M.reshape(B * N, G, c, c)
    S = S.reshape(B * N, G, P_OUT, P_IN)
    out = x.reshape(B * N, G, P_IN, c)
    out = torch.matmul(out, M)
    out = F.relu(F.layer_norm(out, [out.size(-2), out.size(-1)]))
    out = torch.matmul(S, out)
    out = F.relu(F.layer_norm(out, [out.size(-2), out.size(-1)]))
    out = F.linear(
        out.reshape(B, N, -1), sd[p + 'adaptive_mixing.out_proj.weight'],
        sd[p + 'adaptive_mixing.out_proj.bias'])
    return F.layer_norm(query + out, [C], sd[p + 'norm.weight'],
                        sd[p + 'norm.bias'])


def official_lors_mixing(sd, i, x, query):
    """Official FactorizedAdaptiveMixing.forward(stage=i)."""
    p = 'roi_head.adaptive_mixing.'
    B, N = query.shape[:2]
    k, r = LORS_K[i], LORS_R
    Mc, Sc = F.linear(query, sd[p + 'common_parameter_generator.weight'],
                      sd[p + 'common_parameter_generator.bias']).reshape(
                          B * N, G, -1).split([c * c, P_OUT * P_IN], 2)
    Mc = Mc.reshape(B * N, G, 1, c, c)
    Sc = Sc.reshape(B * N, G, 1, P_OUT, P_IN)
    params = F.linear(query, sd[p + f'private_parameter_generator.{i}.weight'],
                      sd[p + f'private_parameter_generator.{i}.bias'])
    params = params.reshape(B * N, 2, G * k, r, r)
    Mp = sd[p + f'ml_parameters.{i}'][None] @ params[:, 0] @ sd[
        p + f'mr_parameters.{i}'][None]
    Sp = sd[p + f'sl_parameters.{i}'][None] @ params[:, 1] @ sd[
        p + f'sr_parameters.{i}'][None]
    Mp = Mp.view(B * N, G, k, c, c)
    Sp = Sp.view(B * N, G, k, P_OUT, P_IN)
    M = torch.cat([Mc, Mp], dim=2).sum(2)
    S = torch.cat([Sc, Sp], dim=2).sum(2)
    out = x.reshape(B * N, G, P_IN, c)
    out = F.relu(F.layer_norm(out @ M, [P_IN, c]))
    out = F.relu(F.layer_norm(S @ out, [P_OUT, c]))
    weight = sd[p + 'base_out_proj.weight'] + (
        sd[p + f'out_weight_add_B.{i}'] @ sd[p + f'out_weight_add_A.{i}'])
    out = F.linear(
        out.reshape(B, N, -1), weight, sd[p + f'out_weight_bias.{i}'])
    return F.layer_norm(query + out, [C], sd[p + f'out_norm.{i}.weight'],
                        sd[p + f'out_norm.{i}.bias'])


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('kind', ['adamixer', 'lors'])
def test_round_trip_through_cli(tmp_path, kind):
    model, official, src = make_checkpoint(tmp_path, kind)
    dst = str(tmp_path / f'converted_{kind}.pth')
    proc = run_cli(kind, src, dst, '--config', CONFIGS[kind])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'no target key missing' in proc.stdout, proc.stdout
    assert f'{len(official)} source keys' in proc.stdout

    ckpt = torch.load(dst, map_location='cpu')
    assert set(ckpt) == {'state_dict', 'meta'}
    meta = ckpt['meta']
    assert meta['converted_from'] == osp.abspath(src)
    assert meta['num_stages'] == N_STAGES
    assert meta['dataset_meta']['classes'] == ('circle', 'square', 'triangle')

    # (i) every tensor equals the original
    original = model.state_dict()
    converted = ckpt['state_dict']
    assert set(converted) == set(original)
    for k, v in original.items():
        assert converted[k].dtype == v.dtype, k
        assert torch.equal(converted[k], v), k

    # (ii) a fresh model loads it strictly and computes the same outputs
    fresh = build_model(CONFIGS[kind])
    fresh.load_state_dict(converted, strict=True)
    fresh.eval()
    images = torch.randn(
        2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model._forward(images)
        after = fresh._forward(images)
    assert len(before) == len(after) == N_STAGES
    for (cls_a, box_a), (cls_b, box_b) in zip(before, after):
        assert torch.isfinite(cls_a).all() and torch.isfinite(box_a).all()
        assert torch.equal(cls_a, cls_b)
        assert torch.equal(box_a, box_b)


@pytest.mark.parametrize('kind', ['adamixer', 'lors'])
def test_mixing_layout_matches_official_math(kind):
    """Converted weights in our mixing == official forward on the
    official-layout tensors (generator splits, core layout, B @ A)."""
    model = build_model(CONFIGS[kind])
    randomise(model, seed=2)
    official = to_official(model.state_dict(), lors=kind == 'lors')
    convert = (
        convert_adamixer_state_dict
        if kind == 'adamixer' else convert_lors_state_dict)
    fresh = build_model(CONFIGS[kind])
    fresh.load_state_dict(convert(official), strict=True)
    fresh.eval()
    gen = torch.Generator().manual_seed(3)
    B, N = 2, 5
    x = torch.randn(B, N, G, P_IN, c, generator=gen)
    query = torch.randn(B, N, C, generator=gen)
    reference = (
        official_adamixer_mixing
        if kind == 'adamixer' else official_lors_mixing)
    with torch.no_grad():
        for i in range(N_STAGES):
            ours = fresh.decoder.mixing(x, query, stage=i)
            theirs = reference(official, i, x, query)
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
            if i:  # stages really differ (no silent weight sharing)
                assert not torch.allclose(
                    ours, fresh.decoder.mixing(x, query, stage=0))


@pytest.mark.slow
def test_unknown_key_is_named(tmp_path):
    model = build_model(CONFIGS['adamixer'])
    official = to_official(model.state_dict(), lors=False)
    official['roi_head.bbox_head.3.mystery_layer.weight'] = torch.ones(2)
    with pytest.raises(ConversionError, match='mystery_layer'):
        convert_adamixer_state_dict(official)
    src = str(tmp_path / 'bad.pth')
    torch.save(dict(state_dict=official), src)
    proc = run_cli('adamixer', src, str(tmp_path / 'out.pth'))
    assert proc.returncode != 0
    assert 'roi_head.bbox_head.3.mystery_layer.weight' in proc.stderr
    assert not osp.exists(tmp_path / 'out.pth')


def test_wrong_converter_names_the_keys():
    lors = build_model(CONFIGS['lors'])
    official = to_official(lors.state_dict(), lors=True)
    with pytest.raises(
            ConversionError, match=r'roi_head\.bbox_head\.0\.sampling\.'):
        convert_adamixer_state_dict(official)
    adamixer = build_model(CONFIGS['adamixer'])
    official = to_official(adamixer.state_dict(), lors=False)
    with pytest.raises(ConversionError, match='sampling_n_mixing'):
        convert_lors_state_dict(official)


def test_unmatched_keys_are_a_few_names_and_a_count():
    """The wrong converter leaves hundreds of keys unmatched: the message
    names five and counts the rest."""
    lors = build_model(CONFIGS['lors'])
    official = to_official(lors.state_dict(), lors=True)
    with pytest.raises(ConversionError) as info:
        convert_adamixer_state_dict(official)
    message = str(info.value)
    unknown = int(message.split(' key(s)')[0])
    assert unknown > 5, message
    assert message.endswith(f', ... ({unknown - 5} more)'), message
    assert message.count('roi_head.') == 5, message


def test_missing_keys_reported(tmp_path):
    model = build_model(CONFIGS['lors'])
    official = to_official(model.state_dict(), lors=True)
    del official['roi_head.adaptive_mixing.out_weight_add_B.4']
    del official['roi_head.bbox_head.2.iof_tau']
    # a bare state dict (no 'state_dict' wrapper) is accepted too
    src = str(tmp_path / 'partial.pth')
    torch.save(official, src)
    lines = []
    convert_checkpoint_file(
        src, str(tmp_path / 'out.pth'), 'lors', log=lines.append)
    text = '\n'.join(lines)
    assert 'WARNING: 2 target key(s) missing' in text, text
    assert 'decoder.mixing.out_proj.private_B.4' in text
    assert 'decoder.stages.2.iof_tau' in text
    # the same against the model a config builds
    lines.clear()
    convert_checkpoint_file(
        src,
        str(tmp_path / 'out.pth'),
        'lors',
        config=CONFIGS['lors'],
        log=lines.append,
        force=True)  # replaces the first output
    assert 'WARNING: 2 target key(s) missing' in '\n'.join(lines)


@pytest.mark.slow
def test_shape_mismatch_with_config_is_an_error(tmp_path):
    model = build_model(CONFIGS['lors'])
    official = to_official(model.state_dict(), lors=True)
    src = str(tmp_path / 'lors.pth')
    torch.save(dict(state_dict=official), src)
    # the AdaMixer-only tiny config has no LORS keys at all
    proc = run_cli('lors', src, str(tmp_path / 'out.pth'), '--config',
                   CONFIGS['adamixer'])
    assert proc.returncode != 0
    assert 'not in the model, e.g. decoder.mixing.generator.shared_' \
        'generator' in proc.stderr
    # a different LORS rank: shapes differ
    official['roi_head.adaptive_mixing.out_weight_add_A.0'] = torch.ones(
        LORS_R_OUT + 1, G * P_OUT * c)
    official['roi_head.adaptive_mixing.out_weight_add_B.0'] = torch.ones(
        C, LORS_R_OUT + 1)
    torch.save(dict(state_dict=official), src)
    with pytest.raises(
            CheckpointMismatchError,
            match='another shape, e.g. '
            r'decoder\.mixing\.out_proj\.private_A\.0'):
        convert_checkpoint_file(
            src,
            str(tmp_path / 'out.pth'),
            'lors',
            config=CONFIGS['lors'],
            log=lambda s: None)
