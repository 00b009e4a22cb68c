import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import assert_xavier_uniform
from mmdet.structures.bbox import bbox_overlaps

from lors_det.models.layers import position_embedding, xyzr_to_xyxy
from lors_det.models.roi_heads import AdaMixerDecoderStage


def make_stage(**kwargs):
    args = dict(
        num_classes=5,
        content_dim=32,
        num_heads=4,
        feedforward_channels=64,
        in_points=16,
        num_groups=2)
    args.update(kwargs)
    return AdaMixerDecoderStage(**args)


def test_stage_init_semantics():
    torch.manual_seed(0)
    stage = make_stage()
    assert torch.count_nonzero(stage.fc_reg.weight) == 0
    assert torch.count_nonzero(stage.fc_reg.bias) == 0
    prior = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(stage.fc_cls.bias, torch.full((5, ), prior))
    # tau ~ U(0, 4): 32 heads cover the range
    tau = make_stage(num_heads=32, content_dim=64).iof_tau
    assert 0 <= tau.min() < 0.5 and 3.5 < tau.max() <= 4
    gen = stage.sampling.sampling_offset_generator
    assert torch.count_nonzero(gen.weight) == 0
    assert (gen.bias.view(2, 16, 3)[..., 2] == -1).all()
    # official init: Xavier-uniform for every other linear of the stage
    special = {id(stage.fc_reg), id(gen)}
    linears = [
        m for m in stage.modules()
        if isinstance(m, nn.Linear) and id(m) not in special
    ]
    assert len(linears) == 6  # ffn x2, cls_fcs, reg_fcs, fc_cls, attn out
    for m in linears:
        assert_xavier_uniform(m.weight)


def test_bad_stage_arguments_name_the_field():
    with pytest.raises(ValueError, match='num_heads'):
        make_stage(num_heads=0)
    with pytest.raises(ValueError, match='num_heads=3 must divide'):
        make_stage(num_heads=3)
    # range(-1) is empty: without the checks these would build no fcs
    for field in ('num_cls_fcs', 'num_reg_fcs'):
        with pytest.raises(ValueError, match=f'{field} must be a non-neg'):
            make_stage(**{field: -1})
    with pytest.raises(ValueError, match='feedforward_channels must be'):
        make_stage(feedforward_channels=0)


def test_stage_forward_shapes_and_mixing_is_called():
    stage = make_stage(in_points=4)
    feats = [torch.randn(2, 32, 16, 16), torch.randn(2, 32, 8, 8)]
    xyzr = torch.tensor([[[32., 32., 5., 0.]]]).repeat(2, 7, 1)
    query = torch.randn(2, 7, 32)
    seen = {}

    def mixing(sampled, q):
        seen['shape'] = sampled.shape
        return q

    cls, delta, q = stage(feats, [4, 8], xyzr, query, mixing)
    assert seen['shape'] == (2, 7, 2, 4, 16)
    assert cls.shape == (2, 7, 5) and delta.shape == (2, 7, 4)
    assert q.shape == (2, 7, 32)
    assert torch.count_nonzero(delta) == 0  # zero-initialised regressor


def reference_self_attention(stage, query, xyzr):
    """Multi-head attention written out, head h adding
    ``tau_h * log(IoF + 1e-7)`` to its logits (AdaMixer's formula)."""
    B, N, C = query.shape
    H = stage.attention.num_heads
    boxes = xyzr_to_xyxy(xyzr)
    log_iof = (bbox_overlaps(boxes, boxes, mode='iof') + 1e-7).log()
    x = query + position_embedding(xyzr, C // 4)
    q, k, v = F.linear(x, stage.attention.in_proj_weight,
                       stage.attention.in_proj_bias).chunk(
                           3, dim=-1)
    q, k, v = (t.view(B, N, H, C // H).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(C // H)  # (B, H, N, N)
    logits = logits + stage.iof_tau.view(1, H, 1, 1) * log_iof[:, None]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
    return stage.attention_norm(x + stage.attention.out_proj(out))


def test_iof_bias_scales_each_head_of_each_image():
    """Distinct tau per head and distinct boxes per image: a bias applied to
    the wrong head or image (mask layout (B * heads, N, N), batch-major)
    gives a different output than the formula."""
    torch.manual_seed(0)
    stage = make_stage(num_heads=4).double()
    with torch.no_grad():
        stage.iof_tau.copy_(torch.tensor([0.0, 1.0, 3.0, 8.0]))
    xyzr = torch.tensor([[[10., 10., 3., 0.], [12., 11., 4., 0.5],
                          [40., 40., 3., 0.]],
                         [[20., 30., 5., 1.], [22., 30., 3., -1.],
                          [60., 20., 4., 0.]]]).double()
    q = torch.randn(2, 3, 32).double()
    ref = reference_self_attention(stage, q, xyzr)
    torch.testing.assert_close(stage.self_attention(q, xyzr), ref)
    with torch.no_grad():
        stage.iof_tau.copy_(stage.iof_tau.flip(0))
    assert not torch.allclose(stage.self_attention(q, xyzr), ref)
