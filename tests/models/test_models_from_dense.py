"""A trained dense detector converted into its LORS config's model
(models/from_dense.py): at full rank the LORS model computes exactly what the
dense one did (float64), for AdaMixer's decoder and for a LORSWrapper stack
(Sparse R-CNN); configs that do not match are refused naming the weight."""
import pytest
import torch
from helpers import SYNTHETIC, load_config, make_batch
from mmdet.registry import MODELS

from lors_det.lors.from_dense import FromDenseError
from lors_det.models.from_dense import (ConfigMismatchError, convert_model,
                                        pair_stacks, rank_fields,
                                        ranks_for_energy)

SPARSE = 'projects/lors_mmdet/configs/synthetic/' \
    'sparse-rcnn-lors_tiny_synthetic.py'
# the tiny AdaMixer: C = 64, G = 2, c = 32, P_out = 32, P_in = 16. LORSA at
# r = 16 covers the (32, 32) ACM matrices with 2 x 2 blocks and the (32, 16)
# ASM ones with 2 x 1, so K = 4 is full rank; LORST r = 64 = min(64, 2048)
FULL_ADAMIXER = dict(
    lorsa=dict(rank=16, num_factors=4), lorst=dict(rank=64, num_factors=1))


def build(path, seed=0, **mixing):
    cfg = load_config(path)
    if mixing:
        cfg.model.decoder.mixing = mixing
    torch.manual_seed(seed)
    return MODELS.build(cfg.model).double().eval()


def trained_dense_adamixer():
    """The dense tiny AdaMixer with every weight random (its generators are
    zero-initialised: a 'trained' one is not)."""
    dense = build(SYNTHETIC['adamixer'])
    with torch.no_grad():
        for layer in dense.decoder.mixing.generator.layers:
            layer.weight.normal_(std=0.05)
            layer.bias.normal_(std=0.5)
    return dense


def double_batch():
    inputs, samples = make_batch(num_images=2, num_gts=(2, 1))
    for sample in samples:  # targets in the models' dtype too
        sample.gt_instances.bboxes = sample.gt_instances.bboxes.double()
    return inputs.double(), samples


def assert_close_outputs(a, b):
    flat_a, flat_b = torch.cat([t.flatten() for t in a
                                ]), torch.cat([t.flatten() for t in b])
    assert flat_a.numel() == flat_b.numel() > 0
    torch.testing.assert_close(flat_a, flat_b, rtol=1e-9, atol=1e-9)


def tensors(out):
    """Every tensor of a nested forward output, in order."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in tensors(o)]
    return []


def stage_outputs(model, inputs, samples):
    with torch.no_grad():
        return [t for stage in model._forward(inputs, samples) for t in stage]


def test_adamixer_full_rank_conversion_gives_the_dense_outputs():
    dense = trained_dense_adamixer()
    lors = build(SYNTHETIC['lors'], seed=1, **FULL_ADAMIXER)
    reports = convert_model(dense, lors)
    assert {r.name: r.kind
            for r in reports} == {
                'decoder.mixing.generator': 'LORSA',
                'decoder.mixing.out_proj': 'LORST'
            }
    assert max(f.rel_error for r in reports for f in r.fits) < 1e-12
    inputs, samples = double_batch()
    ref = stage_outputs(dense, inputs, samples)
    assert_close_outputs(stage_outputs(lors, inputs, samples), ref)
    # the shipped LORS ranks: not exact, but the same model around it
    small = build(SYNTHETIC['lors'], seed=1)
    fits = [f for r in convert_model(dense, small) for f in r.fits]
    assert all(0 < f.rel_error < 1 for f in fits)
    assert torch.equal(small.decoder.mixing.norms[3].weight,
                       dense.decoder.mixing.norms[3].weight)
    assert torch.equal(small.backbone.conv1.weight,
                       dense.backbone.conv1.weight)


def sparse_rcnn_pair(full=True):
    cfg = load_config(SPARSE)
    torch.manual_seed(0)
    dense = MODELS.build(cfg.model.detector).double()
    dense.rpn_head.init_weights()  # the proposal boxes
    if full:  # r = 8 = c: (32, 8) needs 4 x 1 blocks; FFN/fc min dim 32
        share = cfg.model.share[0]
        share.lorsa.update(rank=8, num_factors=4)
        share.lorst.update(rank=32)
    torch.manual_seed(1)
    lors = MODELS.build(cfg.model).double()
    return dense.eval(), lors.eval()


def test_lors_wrapper_full_rank_conversion_gives_the_dense_outputs():
    dense, lors = sparse_rcnn_pair()
    reports = convert_model(dense, lors)
    names = {r.name for r in reports}
    assert names == {
        'lors.roi_head-bbox_head.lorsa.'
        'instance_interactive_conv-dynamic_layer',
        'lors.roi_head-bbox_head.lorst.instance_interactive_conv-fc_layer',
        'lors.roi_head-bbox_head.lorst.ffn-layers-0-0',
        'lors.roi_head-bbox_head.lorst.ffn-layers-1'
    }
    assert max(f.rel_error for r in reports for f in r.fits) < 1e-12
    inputs, samples = double_batch()
    with torch.no_grad():
        ref = dense(inputs, samples, mode='tensor')
        out = lors(inputs, samples, mode='tensor')
    assert_close_outputs(tensors(out), tensors(ref))


def test_rank_fields_and_energy_ranks_name_the_config_blocks():
    dense, lors = sparse_rcnn_pair(full=False)
    assert set(rank_fields(load_config(SPARSE).model)) == {
        'model.share[0].lorsa', 'model.share[0].lorst'
    }
    ranks = ranks_for_energy(dense, lors, 0.3)
    assert set(ranks) == {'model.share[0].lorsa', 'model.share[0].lorst'}
    assert all(1 <= r <= 32 for r in ranks.values())
    with pytest.raises(FromDenseError, match='no rank reaches energy'):
        ranks_for_energy(dense, lors, 1.0)  # K = [1, 2] cannot cover (32, 8)


def test_mismatching_configs_are_refused_naming_the_weight():
    dense = trained_dense_adamixer()
    other = build(SYNTHETIC['lors'])
    other_cfg = load_config(SYNTHETIC['lors'])
    other_cfg.model.decoder.in_points = 8
    with pytest.raises(
            ConfigMismatchError,
            match='decoder.mixing.generator: '
            r'the dense layers are Linear\(in=64, out=3072\)'):
        pair_stacks(dense, MODELS.build(other_cfg.model))
    with pytest.raises(ConfigMismatchError, match='already builds a LORS'):
        pair_stacks(other, other)
    with pytest.raises(ConfigMismatchError, match='builds no LORST/LORSA'):
        pair_stacks(dense, build(SYNTHETIC['adamixer']))
    classes = load_config(SYNTHETIC['lors'])
    classes.model.decoder.num_classes = 5
    with pytest.raises(
            ConfigMismatchError,
            match=r'not the dense config with'
            r' LORS stacks: decoder.stages.0.cls_fc.weight|'
            r'decoder.stages.0.\S+ \(\(5'):
        pair_stacks(dense, MODELS.build(classes.model))
    deeper = load_config(SYNTHETIC['adamixer'])
    deeper.model.decoder.stage.num_reg_fcs = 2  # weights LORS lacks
    with pytest.raises(
            ConfigMismatchError,
            match=r'dense decoder.stages.0.'
            r'\S+ \(not in the LORS model\)'):
        pair_stacks(MODELS.build(deeper.model), other)
    sparse_dense, _ = sparse_rcnn_pair(full=False)
    with pytest.raises(ConfigMismatchError):
        pair_stacks(sparse_dense, other)
