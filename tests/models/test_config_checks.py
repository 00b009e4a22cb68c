"""Config values out of range and misspelled option names fail when the
model is built (before data loading and training), naming the field.

Models are built from the shipped synthetic configs with one override each.
Values that only make sense together (the neck's, the queries' and the
decoder's widths; strides per neck level) are checked by the detector.
"""
import copy
import functools

import pytest
from helpers import ADAMIXER_CFG, LORS_CFG
from mmdet.registry import MODELS
from mmengine.config import Config

LORS_OK = dict(
    lorsa=dict(rank=8, num_factors=[1, 1, 2, 2, 3, 3]),
    lorst=dict(rank=4, num_factors=1))


def _lors(lorsa=None, lorst=None):
    mixing = {k: dict(v) for k, v in LORS_OK.items()}
    mixing['lorsa'].update(lorsa or {})
    mixing['lorst'].update(lorst or {})
    return mixing


@functools.lru_cache(maxsize=None)
def _config(base):
    cfg = Config.fromfile(base)
    # a thinner backbone: faster to build, irrelevant to the checks
    cfg.model.backbone.base_channels = 16
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    return cfg


def _build(base, decoder=None, **model_parts):
    cfg = copy.deepcopy(_config(base))
    for key, value in (decoder or {}).items():
        if key == 'mixing':
            cfg.model.decoder[key] = value  # replace, not merge
        elif isinstance(value, dict) and isinstance(
                cfg.model.decoder.get(key), dict):
            cfg.model.decoder[key].update(value)
        else:
            cfg.model.decoder[key] = value
    for part, value in model_parts.items():
        cfg.model[part].update(value)
    return MODELS.build(cfg.model)


CLEAR = {
    # id: (config, decoder overrides, other model overrides, exception,
    #      strings the message must contain)
    'lorsa-rank-larger-than-matrix':
    (LORS_CFG, dict(mixing=_lors(lorsa=dict(rank=1000))), {}, ValueError,
     ['rank=1000', 'larger than the matrix']),
    'lorst-rank-larger-than-matrix':
    (LORS_CFG, dict(mixing=_lors(lorst=dict(rank=1000))), {}, ValueError,
     ['rank', '1000', 'larger than the matrix']),
    'lorsa-rank-zero': (LORS_CFG, dict(mixing=_lors(lorsa=dict(rank=0))), {},
                        ValueError, ['rank must be a positive integer']),
    'lorsa-K-list-length':
    (LORS_CFG, dict(mixing=_lors(lorsa=dict(num_factors=[1, 2]))), {},
     ValueError, ['num_factors has 2 entries', 'num_stages']),
    'lorst-K-list-length':
    (LORS_CFG, dict(mixing=_lors(lorst=dict(num_factors=[1, 2, 3]))), {},
     ValueError, ['num_factors has 3 entries', 'num_stages']),
    'K-zero': (LORS_CFG,
               dict(mixing=_lors(lorsa=dict(num_factors=[0, 1, 2, 2, 3, 3]))),
               {}, ValueError, ['num_factors[0] must be a positive integer']),
    'groups-not-dividing-content-dim': (ADAMIXER_CFG, dict(num_groups=3), {},
                                        ValueError, ['num_groups=3',
                                                     'divide']),
    # num_groups and in_points are checked by the sampling (built in each
    # stage), out_points by the mixing: where they are used
    'groups-zero': (ADAMIXER_CFG, dict(num_groups=0), {}, ValueError,
                    ['num_groups must be a positive integer', 'got 0']),
    'groups-negative': (ADAMIXER_CFG, dict(num_groups=-2), {}, ValueError,
                        ['num_groups must be a positive integer', 'got -2']),
    'out-points-negative':
    (ADAMIXER_CFG, dict(out_points=-1), {}, ValueError,
     ['decoder: out_points must be a positive '
      'integer', 'got -1']),
    'num-classes-zero':
    (ADAMIXER_CFG, dict(num_classes=0), {}, ValueError,
     ['decoder.num_classes must be a positive integer', 'got 0']),
    'content-dim-zero':
    (ADAMIXER_CFG, dict(content_dim=0), {}, ValueError,
     ['decoder.content_dim must be a positive integer', 'got 0']),
    'query-content-dim-zero':
    (ADAMIXER_CFG, {}, dict(query_generator=dict(content_dim=0)), ValueError,
     ['query_generator.content_dim must be a positive integer', 'got 0']),
    'stage-loss-weight-nan':
    (ADAMIXER_CFG, dict(stage_loss_weights=[1.0, float('nan')] + [1.0] * 4),
     {}, ValueError,
     ['decoder.stage_loss_weights[1] must be a non-negative finite number']),
    'heads-not-dividing-content-dim': (ADAMIXER_CFG,
                                       dict(stage=dict(num_heads=3)), {},
                                       ValueError,
                                       ['num_heads=3', 'content_dim=64']),
    'num-stages-zero': (ADAMIXER_CFG, dict(num_stages=0), {}, ValueError,
                        ['decoder.num_stages', 'got 0']),
    'stage-loss-weights-length':
    (ADAMIXER_CFG, dict(stage_loss_weights=[1.0]), {}, ValueError,
     ['stage_loss_weights has 1 entries', 'num_stages=6']),
    'num-queries-zero': (ADAMIXER_CFG, {},
                         dict(query_generator=dict(num_queries=0)), ValueError,
                         ['num_queries']),
    # misspelled option names
    # (the messages name the config block and list the accepted keys,
    # which Python's own keyword error does not)
    'typo-in-lorsa':
    (LORS_CFG, dict(mixing=dict(lorsa=dict(rnak=8))), {}, TypeError,
     ["mixing.lorsa: unknown key 'rnak'", "accepted: 'rank', 'num_factors'"]),
    'typo-in-lorst':
    (LORS_CFG, dict(mixing=_lors(lorst=dict(use_shard=0))), {}, TypeError,
     ["mixing.lorst: unknown key "
      "'use_shard'", "'use_shared'"]),
    'lorst-num-factors-float':
    (LORS_CFG, dict(mixing=_lors(lorst=dict(num_factors=1.5))), {}, TypeError,
     [
         'mixing.lorst: num_factors must be an int or a list of 6',
         '1.5 (float)'
     ]),
    'typo-in-mixing':
    (ADAMIXER_CFG, dict(mixing=dict(lorsaa=dict(rank=8))), {}, TypeError,
     ["decoder.mixing: unknown key 'lorsaa'", "accepted: 'lorsa', 'lorst'"]),
    'typo-in-stage': (ADAMIXER_CFG, dict(stage=dict(num_haeds=4)), {},
                      TypeError, [
                          "decoder.stage: unknown key 'num_haeds'",
                          "accepted: 'num_heads'"
                      ]),
    # wrong types and ranges (each failed with an unrelated message, or not
    # at all, before lors_det.lors.checks covered it)
    'num-queries-float':
    (ADAMIXER_CFG, {}, dict(query_generator=dict(num_queries=2.5)), ValueError,
     [
         'query_generator.num_queries must be a positive integer',
         'got 2.5 (float)'
     ]),
    'stage-loss-weight-negative':
    (ADAMIXER_CFG, dict(stage_loss_weights=[1.0, 1.0, -1.0, 1.0, 1.0, 1.0]),
     {}, ValueError, [
         'decoder.stage_loss_weights[2] must be a non-negative finite number',
         'got -1.0 (float)'
     ]),
    'stage-loss-weight-string':
    (ADAMIXER_CFG, dict(stage_loss_weights=['1'] * 6), {}, ValueError,
     ['decoder.stage_loss_weights[0]', "got '1' (str)"]),
    'feedforward-channels-zero':
    (ADAMIXER_CFG, dict(stage=dict(feedforward_channels=0)), {}, ValueError, [
        'decoder.stage', 'feedforward_channels must be a positive integer',
        'got 0 (int)'
    ]),
    'num-reg-fcs-negative': (ADAMIXER_CFG, dict(stage=dict(num_reg_fcs=-1)),
                             {}, ValueError, [
                                 'decoder.stage',
                                 'num_reg_fcs must be a non-negative integer'
                             ]),
    'ffn-tied-not-bool': (ADAMIXER_CFG, dict(stage=dict(ffn=dict(tied='yes'))),
                          {}, ValueError, [
                              'decoder.stage', 'tied must be True or False',
                              "got 'yes' (str)"
                          ]),
    'max-per-img-zero': (ADAMIXER_CFG, {}, dict(test_cfg=dict(max_per_img=0)),
                         ValueError, ['test_cfg.max_per_img', 'got 0']),
    # unknown keys: named, with the accepted ones listed
    'unknown-train-cfg-key':
    (ADAMIXER_CFG, {},
     dict(train_cfg=dict(asigner=dict(type='HungarianAssigner'))), TypeError,
     ["model.train_cfg: unknown key 'asigner'", "'assigner'"]),
    'unknown-test-cfg-key': (ADAMIXER_CFG, {},
                             dict(test_cfg=dict(max_per_imgs=10)), TypeError, [
                                 "model.test_cfg: unknown key 'max_per_imgs'",
                                 "'max_per_img'"
                             ]),
    'unknown-stage-key-lists-accepted':
    (ADAMIXER_CFG, dict(stage=dict(num_haeds=4)), {}, TypeError, [
        "decoder.stage: unknown key 'num_haeds'", "'num_heads'",
        "'feedforward_channels'", "'ffn'"
    ]),
    'stage-key-set-by-the-decoder':
    (ADAMIXER_CFG, dict(stage=dict(in_points=8)), {}, TypeError,
     ["decoder.stage: unknown key 'in_points'"]),
    'unknown-mixing-key-lists-accepted':
    (ADAMIXER_CFG, dict(mixing=dict(lorsaa=dict(rank=8))), {}, TypeError, [
        "decoder.mixing: unknown key 'lorsaa'", "'lorsa'", "'lorst'",
        "'out_proj_lorita'"
    ]),
}


@pytest.mark.parametrize('case', sorted(CLEAR))
def test_bad_value_raises_naming_the_field(case):
    base, decoder, parts, exc, expected = CLEAR[case]
    with pytest.raises(exc) as info:
        _build(base, decoder, **parts)
    for text in expected:
        assert text in str(info.value), str(info.value)


def test_shipped_synthetic_configs_build():
    _build(ADAMIXER_CFG)
    _build(LORS_CFG)


def test_a_zero_stage_loss_weight_is_allowed():
    """Non-negative, not positive: a stage can be left unsupervised."""
    model = _build(ADAMIXER_CFG, dict(stage_loss_weights=[0.0] + [1.0] * 5))
    assert model.decoder.stage_loss_weights[0] == 0.0


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_groups=0), 'num_groups must be a positive integer, got 0'),
    (dict(num_groups=3), 'num_groups=3 must divide feat_channels=64'),
    (dict(num_groups=2.0), 'num_groups must be a positive integer, got 2.0'),
    (dict(in_points=0), 'in_points must be a positive integer, got 0'),
    (dict(out_points=0), 'out_points must be a positive integer, got 0'),
])
def test_the_mixing_checks_the_sizes_it_uses(kwargs, message):
    from lors_det.models import AdaptiveMixing
    args = dict(
        content_dim=64,
        feat_channels=64,
        in_points=4,
        out_points=8,
        num_groups=2,
        num_stages=2)
    AdaptiveMixing(**args)  # fine
    with pytest.raises(ValueError, match=message):
        AdaptiveMixing(**{**args, **kwargs})


def test_check_divides_names_both_values():
    from lors_det.lors.checks import check_divides
    assert check_divides('g', 4, 'c', 64) == 4
    with pytest.raises(ValueError, match='g=3 must divide c=64'):
        check_divides('g', 3, 'c', 64)
    for bad in (0, -4, 4.0, True):
        with pytest.raises(ValueError, match='g must be a positive integer'):
            check_divides('g', bad, 'c', 64)


SHAPE_CASES = {
    # id: (decoder overrides, other model overrides, field to be named)
    'in-points-zero': (dict(in_points=0), {}, 'in_points'),
    'in-points-float': (dict(in_points=16.5), {}, 'in_points'),
    'decoder-content-dim-vs-query': (dict(content_dim=96), {}, 'content_dim'),
    'neck-out-channels-vs-content-dim':
    ({}, dict(neck=dict(out_channels=32)), 'out_channels'),
    'featmap-strides-vs-neck-levels':
    (dict(featmap_strides=[4, 8, 16]), {}, 'featmap_strides'),
}


@pytest.mark.parametrize('case', sorted(SHAPE_CASES))
def test_shape_and_cross_module_values_raise_naming_the_field(case):
    decoder, parts, field = SHAPE_CASES[case]
    with pytest.raises(ValueError, match=field):
        _build(ADAMIXER_CFG, decoder, **parts)


LR_CASES = {
    # id: optimizer.lr (before: torch's TypeError "'<=' not supported
    # between instances of 'float' and 'str'", "Invalid learning rate: -1",
    # or accepted)
    'string': 'fast',
    'zero': 0.0,
    'negative': -1.0,
    'inf': float('inf'),
    'nan': float('nan'),
    'bool': True,
}


@pytest.mark.parametrize('case', sorted(LR_CASES))
def test_bad_learning_rate_names_the_field(case):
    """The shipped optim_wrapper config, built as the Runner builds it."""
    import torch
    from mmengine.optim import build_optim_wrapper
    cfg = copy.deepcopy(_config(ADAMIXER_CFG).optim_wrapper)
    cfg.optimizer.lr = LR_CASES[case]
    with pytest.raises(ValueError) as info:
        build_optim_wrapper(torch.nn.Linear(2, 1), cfg)
    msg = str(info.value)
    assert 'optim_wrapper.optimizer.lr must be a positive finite number' \
        in msg, msg
    assert f'got {LR_CASES[case]!r}' in msg, msg


def test_optim_wrapper_checks_the_learning_rate_of_a_built_optimizer():
    import torch

    from lors_det.engine import NonFiniteCheckOptimWrapper
    params = torch.nn.Linear(2, 1).parameters()
    with pytest.raises(ValueError, match=r'optim_wrapper\.optimizer\.lr.*inf'):
        NonFiniteCheckOptimWrapper(
            optimizer=torch.optim.SGD(params, lr=float('inf')))


def test_reliability_options_are_checked_too():
    from lors_det.datasets import CheckedCocoDataset
    with pytest.raises(ValueError, match='degenerate_boxes'):
        CheckedCocoDataset(degenerate_boxes='ignore', lazy_init=True)
