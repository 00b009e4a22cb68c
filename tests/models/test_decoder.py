"""The decoder's stage chain and the pieces every stage shares: boxes are
detached between stages, the query boxes' position embedding, a stage's
``init_weights`` (what mmengine calls after building)."""
import math

import torch
import torch.nn as nn
from helpers import SYNTHETIC, build_model

from lors_det.models.layers import position_embedding


def decoder_inputs(decoder, batch=2, queries=5, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = decoder.content_dim
    features = [
        torch.randn(batch, C, size // s, size // s, generator=g)
        for s in decoder.featmap_strides
    ]
    xy = torch.rand(batch, queries, 2, generator=g) * size
    zr = torch.stack(
        [torch.full((batch, queries), 4.0),
         torch.zeros(batch, queries)],
        dim=-1)
    query = torch.randn(batch, queries, C, generator=g)
    return features, torch.cat([xy, zr], dim=-1), query


def test_boxes_are_detached_between_stages():
    """The last stage's boxes do not back-propagate into the box
    regressors of earlier stages (official: ``query_xyzr.detach()``); the
    content query still carries gradient from stage to stage."""
    torch.manual_seed(0)
    decoder = build_model(SYNTHETIC['lors']).decoder
    assert decoder.num_stages >= 2
    with torch.no_grad():  # non-zero regressors: deltas depend on them
        for stage in decoder.stages:
            stage.fc_reg.weight.normal_(std=0.1)
    _, boxes = decoder(*decoder_inputs(decoder))[-1]
    boxes.sum().backward()
    first, last = decoder.stages[0], decoder.stages[-1]
    assert first.fc_reg.weight.grad is None
    assert last.fc_reg.weight.grad.abs().sum() > 0
    assert first.ffn.fc1.weight.grad.abs().sum() > 0  # content flows


def test_position_embedding_closed_form():
    """x, y scaled by 1/1000, z, r not; feature k of a coordinate p is
    sin (k even) or cos (k odd) of p / 10000^(2 floor(k/2) / F)."""
    F_ = 8
    xyzr = torch.tensor([[[500., 250., 3., -1.]]])
    pe = position_embedding(xyzr, F_).view(4, F_)
    for c, p in enumerate([0.5, 0.25, 3., -1.]):
        for k in range(F_):
            angle = p / 10000**(2 * (k // 2) / F_)
            want = math.sin(angle) if k % 2 == 0 else math.cos(angle)
            assert abs(pe[c, k].item() - want) < 1e-6, (c, k)


def test_stage_init_weights_redraws_every_linear():
    """``init_weights`` after training (or after a load) puts every linear
    back to the official init: Xavier weights and ``nn.Linear``'s default
    bias, U(-1/sqrt(in), 1/sqrt(in))."""
    torch.manual_seed(0)
    stage = build_model(SYNTHETIC['adamixer']).decoder.stages[0]
    special = {
        id(stage.fc_cls),
        id(stage.fc_reg),
        id(stage.sampling.sampling_offset_generator)
    }
    linears = [
        m for m in stage.modules()
        if isinstance(m, nn.Linear) and id(m) not in special
    ]
    with torch.no_grad():
        for m in linears:
            m.weight.fill_(5.0)
            m.bias.fill_(5.0)
    stage.init_weights()
    for m in linears:
        bound = 1 / math.sqrt(m.in_features)
        assert m.bias.abs().max() <= bound
        assert m.weight.abs().max() <= math.sqrt(
            6 / (m.in_features + m.out_features))
