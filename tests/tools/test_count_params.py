"""Parameter counts (tools/analysis/count_params.py,
lors_det.models.param_counts)
against closed-form counts derived from the OFFICIAL module definitions.

The formulas below are written from the official code, not from ours:

* AdaMixer (MCG-NJU/AdaMixer, ``AdaMixerDecoderStage``): mmcv
  ``MultiheadAttention`` (= ``nn.MultiheadAttention``: in_proj 3C*C + 3C,
  out_proj C*C + C), ``attention_norm`` LN, ``iof_tau`` (num_heads), mmcv
  ``FFN`` (Linear(C, F), Linear(F, C)), ``ffn_norm`` LN, ``cls_fcs``
  (Linear + LN) x num_cls_fcs, ``fc_cls`` Linear(C, K), ``reg_fcs`` likewise,
  ``fc_reg`` Linear(C, 4), and ``sampling_n_mixing`` =
  ``sampling_offset_generator`` Linear(C, G*P_in*3), ``adaptive_mixing``
  (``parameter_generator`` Linear(C, G*(c*c + P_out*P_in)), ``out_proj``
  Linear(G*P_out*c, C)) and its LN ``norm``.
* LORS (li-jl16/LORS): the stage is the same without mixing (its
  ``sampling`` holds only the offset generator); ONE
  ``FactorizedAdaptiveMixing``: ``common_parameter_generator``
  Linear(C, G*(c*c + P_out*P_in)), per stage ``private_parameter_generator``
  Linear(C, 2*G*K_i*r^2), ``ml`` (G*K_i, c, r), ``mr`` (G*K_i, r, c), ``sl``
  (G*K_i, P_out, r), ``sr`` (G*K_i, r, P_in), ``base_out_proj``
  Linear(G*P_out*c, C, bias=False), per stage ``out_weight_add_A``
  (r_o, G*P_out*c), ``out_weight_add_B`` (C, r_o), ``out_weight_bias`` (C)
  and ``out_norm`` LN(C).
* ResNet (torchvision / mmdet layout, no fc), the ``ChannelMapping`` neck
  (1x1 convs with bias + one GroupNorm) and the query generator
  (``Embedding(N, 4)`` + ``Embedding(N, C)``).

The hyper-parameters of each config are written here from the papers, so a
config that drifts from them fails too.
"""
import json
import os.path as osp
import subprocess
import sys

import pytest

from lors_det.models.param_counts import build_model, model_param_counts

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COUNT_PARAMS = osp.join(REPO_ROOT, 'tools', 'analysis', 'count_params.py')

ADAMIXER_4X32 = 'configs/adamixer/adamixer_r50_8xb2-1x_coco.py'
ADAMIXER_2X64 = 'configs/adamixer/adamixer-2x64_r50_8xb2-1x_coco.py'
LORS = 'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py'
PRIVATE_ONLY = ('configs/lors/ablations/'
                'adamixer-lors-private-only_r50_8xb2-1x_coco.py')
TINY = 'configs/synthetic/adamixer_tiny_synthetic.py'
TINY_LORS = 'configs/synthetic/adamixer-lors_tiny_synthetic.py'

COCO = dict(
    C=256,
    heads=8,
    ffn=2048,
    classes=80,
    stages=6,
    P_out=128,
    queries=100,
    depth=50,
    in_channels=(256, 512, 1024, 2048),
    frozen_stages=1)
SYNTH = dict(
    C=64,
    heads=4,
    ffn=256,
    classes=3,
    stages=6,
    P_out=32,
    queries=20,
    depth=18,
    in_channels=(64, 128, 256, 512),
    frozen_stages=-1,
    G=2,
    P_in=16)
# LORS (paper Sec. 4 / official config famixer_r50_lors_100_query_1x_coco):
# kernel_sizes r = 16, kernel_groups K = [1, 1, 2, 2, 3, 3],
# mix_out_proj_ranks r_o = 8
SPECS = {
    ADAMIXER_4X32:
    dict(COCO, G=4, P_in=32, lors=None),
    ADAMIXER_2X64:
    dict(COCO, G=2, P_in=64, lors=None),
    LORS:
    dict(COCO, G=2, P_in=64, lors=dict(r=16, K=[1, 1, 2, 2, 3, 3], r_out=8)),
    # paper Table 5 ablation: no common generator, no base_out_proj
    PRIVATE_ONLY:
    dict(
        COCO,
        G=2,
        P_in=64,
        lors=dict(r=16, K=[1, 1, 2, 2, 3, 3], r_out=8, shared=False)),
    TINY:
    dict(SYNTH, lors=None),
    TINY_LORS:
    dict(SYNTH, lors=dict(r=8, K=[1, 1, 2, 2, 3, 3], r_out=4)),
}


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------
def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def layer_norm(d):
    return 2 * d


def official_stage(s, num_cls_fcs=1, num_reg_fcs=1):
    """One official decoder stage WITHOUT its adaptive mixing."""
    C = s['C']
    attention = (3 * C * C + 3 * C) + linear(C, C)  # in_proj + out_proj
    return (attention + layer_norm(C)  # attention, attention_norm
            + s['heads']  # iof_tau
            + linear(C, s['G'] * s['P_in'] * 3)  # sampling_offset_generator
            + linear(C, s['ffn']) + linear(s['ffn'], C)  # mmcv FFN
            + layer_norm(C)  # ffn_norm
            + num_cls_fcs * (linear(C, C) + layer_norm(C))  # cls_fcs
            + linear(C, s['classes'])  # fc_cls (sigmoid: K outputs)
            + num_reg_fcs * (linear(C, C) + layer_norm(C))  # reg_fcs
            + linear(C, 4))  # fc_reg


def official_adamixer_mixing(s):
    """Per-stage AdaptiveMixing + its LN, as dict of parts."""
    C, G, P_in, P_out = s['C'], s['G'], s['P_in'], s['P_out']
    c = C // G
    return dict(
        generator=linear(C, G * (c * c + P_out * P_in)),
        out_proj=linear(G * P_out * c, C),
        norm=layer_norm(C))


def official_lors_mixing(s):
    """FactorizedAdaptiveMixing (all stages), as shared / private parts."""
    C, G, P_in, P_out = s['C'], s['G'], s['P_in'], s['P_out']
    c, r, r_o = C // G, s['lors']['r'], s['lors']['r_out']
    Ks = s['lors']['K']
    with_shared = s['lors'].get('shared', True)  # False: private-only
    # common_parameter_generator
    gen_shared = linear(C, G * (c * c + P_out * P_in)) * with_shared
    gen_private = sum(
        linear(C, 2 * G * K * r * r)  # private_parameter_generator
        + G * K * c * r + G * K * r * c  # ml, mr
        + G * K * P_out * r + G * K * r * P_in  # sl, sr
        for K in Ks)
    # base_out_proj (no bias)
    out_shared = linear(G * P_out * c, C, bias=False) * with_shared
    out_private = len(Ks) * (r_o * G * P_out * c + C * r_o + C)  # A, B, bias
    return dict(
        gen_shared=gen_shared,
        gen_private=gen_private,
        out_shared=out_shared,
        out_private=out_private,
        norms=len(Ks) * layer_norm(C))


def resnet(depth):
    """(total, frozen-by-frozen_stages=1) of an mmdet/torchvision ResNet
    without fc: convs have no bias, every BN has 2 parameters per channel."""
    bottleneck = depth >= 50
    blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    stem = 7 * 7 * 3 * 64 + 2 * 64
    total, stage_params = stem, []
    in_ch = 64
    for planes, n in zip((64, 128, 256, 512), blocks):
        out_ch = planes * 4 if bottleneck else planes
        p = 0
        for b in range(n):
            if bottleneck:
                p += in_ch * planes + 2 * planes  # conv1 1x1 + bn1
                p += 9 * planes * planes + 2 * planes  # conv2 3x3 + bn2
                p += planes * out_ch + 2 * out_ch  # conv3 1x1 + bn3
            else:
                p += 9 * in_ch * planes + 2 * planes
                p += 9 * planes * planes + 2 * planes
            if b == 0 and in_ch != out_ch:  # first block of a stage
                p += in_ch * out_ch + 2 * out_ch  # downsample conv + bn
            in_ch = out_ch
        stage_params.append(p)
        total += p
    return total, stem + stage_params[0]


def neck(s):
    C = s['C']
    return sum(linear(i, C) for i in s['in_channels']) + 2 * C  # + GroupNorm


def query_generator(s):
    return s['queries'] * 4 + s['queries'] * s['C']


def expected_decoder(s):
    """Decoder parts in our grouping: stages (all), generator, out_proj,
    norms, plus shared / private totals."""
    n = s['stages']
    stages = n * official_stage(s)
    if s['lors'] is None:
        m = official_adamixer_mixing(s)
        gen, out, norms = n * m['generator'], n * m['out_proj'], n * m['norm']
        shared = private = 0
    else:
        m = official_lors_mixing(s)
        gen = m['gen_shared'] + m['gen_private']
        out = m['out_shared'] + m['out_private']
        norms = m['norms']
        shared = m['gen_shared'] + m['out_shared']
        private = m['gen_private'] + m['out_private']
    return dict(
        stage=official_stage(s),
        stages=stages,
        generator=gen,
        out_proj=out,
        norms=norms,
        total=stages + gen + out + norms,
        shared=shared,
        private=private)


# ---------------------------------------------------------------------------
# measured counts (models are built once and dropped)
# ---------------------------------------------------------------------------
_CACHE = {}


def measured(config):
    if config not in _CACHE:
        model = build_model(osp.join(REPO_ROOT, config))
        counts = model_param_counts(model)
        counts['per_stage'] = [
            sum(p.numel() for p in st.parameters())
            for st in model.decoder.stages
        ]
        _CACHE[config] = counts
        del model
    return _CACHE[config]


def test_known_constants():
    # sanity of the closed forms themselves
    assert resnet(50)[0] == 23_508_032  # torchvision resnet50 minus fc
    assert resnet(18)[0] == 11_176_512  # torchvision resnet18 minus fc
    assert resnet(101)[0] == 42_500_160  # torchvision resnet101 minus fc


@pytest.mark.parametrize('config', list(SPECS))
def test_decoder_matches_official_formulas(config):
    s = SPECS[config]
    e = expected_decoder(s)
    got = measured(config)
    parts = got['decoder_parts']
    assert got['per_stage'] == [e['stage']] * s['stages'], 'decoder stage'
    assert parts['stages']['total'] == e['stages']
    assert parts['mixing.generator']['total'] == e['generator'], \
        'mixing generator'
    assert parts['mixing.out_proj']['total'] == e['out_proj'], \
        'mixing out_proj'
    assert parts['mixing.norms']['total'] == e['norms'], 'mixing norms'
    assert 'rest' not in parts, f'decoder parameters outside the parts: ' \
        f'{parts.get("rest")}'
    assert got['decoder']['total'] == e['total']
    assert got['decoder']['shared'] == e['shared']
    assert got['decoder']['private'] == e['private']
    assert got['decoder']['other'] == e['total'] - e['shared'] - e['private']
    assert got['decoder']['trainable'] == e['total']


@pytest.mark.parametrize('config', list(SPECS))
def test_backbone_neck_query_generator(config):
    s = SPECS[config]
    got = measured(config)
    total, frozen = resnet(s['depth'])
    assert got['backbone']['total'] == total
    assert got['backbone']['trainable'] == (
        total - frozen if s['frozen_stages'] == 1 else total)
    assert got['neck']['total'] == neck(s)
    assert got['query_generator']['total'] == query_generator(s)
    # the initial boxes are a frozen (never-updated) parameter
    assert got['query_generator']['trainable'] == s['queries'] * s['C']
    assert got['total']['total'] == (
        total + neck(s) + query_generator(s) + expected_decoder(s)['total'])


def test_r50_known_values():
    for config in (ADAMIXER_4X32, ADAMIXER_2X64, LORS):
        got = measured(config)
        assert got['backbone']['total'] == 23_508_032
        lateral = (256 + 512 + 1024 + 2048) * 256
        assert got['neck']['total'] == 4 * 256 + lateral + 512
        assert got['query_generator']['total'] == 100 * 4 + 100 * 256


def test_lors_decoder_reduction():
    lors = measured(LORS)['decoder']['total']
    d2x64 = measured(ADAMIXER_2X64)['decoder']['total']
    d4x32 = measured(ADAMIXER_4X32)['decoder']['total']
    assert 0.70 < 1 - lors / d2x64 < 0.76, (lors, d2x64)
    assert 1 - lors / d4x32 > 0.60, (lors, d4x32)


def _run(*args):
    return subprocess.run([sys.executable, COUNT_PARAMS, *args],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_json():
    proc = _run(LORS, '--json')
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # ONE JSON object, nothing else
    assert set(data) == {
        'backbone', 'neck', 'query_generator', 'decoder', 'total',
        'decoder_shared', 'decoder_private'
    }
    assert all(isinstance(v, int) for v in data.values())
    s = SPECS[LORS]
    e = expected_decoder(s)
    # the tool's numbers against the closed forms, not against the function
    # it calls
    assert data['backbone'] == resnet(s['depth'])[0]
    assert data['neck'] == neck(s)
    assert data['query_generator'] == query_generator(s)
    assert data['total'] == (
        data['backbone'] + data['neck'] + data['query_generator'] +
        data['decoder'])
    assert data['decoder'] == e['total']
    assert data['decoder_shared'] == e['shared']
    assert data['decoder_private'] == e['private']


@pytest.mark.slow
def test_cli_text():
    proc = _run(LORS)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    first = out.splitlines()[1]  # after the config path
    for word in ('100 queries', 'G=2', 'P_in=64', 'P_out=128', 'LORSA',
                 'rank=16', 'LORST', 'rank=8', 'ffn: plain'):
        assert word in first, (word, first)
    for name in ('backbone', 'neck', 'query_generator', 'decoder', 'total',
                 'shared', 'private', 'stages', 'mixing.generator',
                 'mixing.out_proj', 'mixing.norms'):
        assert name in out, name
    assert f'{expected_decoder(SPECS[LORS])["total"]:,}' in out


@pytest.mark.slow
def test_a_model_that_is_not_adamixer_is_refused_by_name():
    """LORSWrapper configs have no AdaMixer components to count: the tool
    says so and where their counts are, instead of an AttributeError."""
    config = ('projects/lors_mmdet/configs/synthetic/'
              'dino-4scale-lors_tiny_synthetic.py')
    proc = _run(config)
    assert proc.returncode == 1
    assert 'error: ' + config in proc.stderr
    assert 'LORSWrapper has no backbone' in proc.stderr
    assert 'Traceback' not in proc.stderr
