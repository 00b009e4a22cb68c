import math

import torch
import torch.nn as nn

from lors_det.models.roi_heads import AdaMixerDecoderStage


def test_stage_init_semantics():
    stage = AdaMixerDecoderStage(num_classes=5, content_dim=32, num_heads=4,
                                 feedforward_channels=64, in_points=16,
                                 num_groups=2)
    assert torch.count_nonzero(stage.fc_reg.weight) == 0
    assert torch.count_nonzero(stage.fc_reg.bias) == 0
    prior = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(stage.fc_cls.bias, torch.full((5, ), prior))
    assert ((stage.iof_tau >= 0) & (stage.iof_tau <= 4)).all()
    gen = stage.sampling.sampling_offset_generator
    assert torch.count_nonzero(gen.weight) == 0
    assert (gen.bias.view(2, 16, 3)[..., 2] == -1).all()
    # Xavier bound for the FFN's first linear
    bound = math.sqrt(6 / (32 + 64))
    assert stage.ffn.fc1.weight.abs().max() <= bound


def test_stage_forward_shapes_and_mixing_is_called():
    stage = AdaMixerDecoderStage(num_classes=5, content_dim=32, num_heads=4,
                                 feedforward_channels=64, in_points=4,
                                 num_groups=2)
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


def test_iof_bias_is_per_head():
    stage = AdaMixerDecoderStage(num_classes=2, content_dim=16, num_heads=2,
                                 feedforward_channels=16, in_points=4,
                                 num_groups=2)
    xyzr = torch.tensor([[[10., 10., 3., 0.], [40., 40., 3., 0.]]])
    q = torch.randn(1, 2, 16)
    out = stage.self_attention(q, xyzr)
    with torch.no_grad():
        stage.iof_tau.fill_(0.0)
    assert not torch.allclose(out, stage.self_attention(q, xyzr))
    assert isinstance(stage.attention, nn.MultiheadAttention)
