"""Every module's defaults are AdaMixer's official settings (R50, COCO):
C = 256, G = 4 groups of P_in = 32 points, P_out = 128, 6 stages, 8 heads,
FFN 2048, 80 classes (docs/DESIGN.md). Built on the meta device: shapes
only."""
import pytest
import torch

from lors_det.models import (AdaMixerDecoder, AdaMixerDecoderStage,
                             AdaptiveMixing, AdaptiveSampling, ChannelMapping)
from lors_det.models.layers import FFN


def test_mixing_defaults():
    with torch.device('meta'):
        mixing = AdaptiveMixing()
    c = 256 // 4
    assert mixing.num_groups == 4
    assert (mixing.in_points, mixing.out_points) == (32, 128)
    assert len(mixing.norms) == 6
    assert mixing.generator.layers[5].weight.shape == (4 * (c * c + 128 * 32),
                                                       256)
    assert mixing.out_proj.layers[5].weight.shape == (256, 4 * 128 * c)


def test_stage_sampling_and_decoder_defaults():
    with torch.device('meta'):
        stage = AdaMixerDecoderStage()
        sampling = AdaptiveSampling()
        decoder = AdaMixerDecoder()
    assert stage.attention.num_heads == 8 and stage.fc_cls.out_features == 80
    assert stage.ffn.fc1.weight.shape == (2048, 256)
    with torch.device('meta'):
        assert FFN().fc1.weight.shape == (2048, 256)
    assert stage.sampling.sampling_offset_generator.weight.shape == (4 * 32 *
                                                                     3, 256)
    assert sampling.sampling_offset_generator.weight.shape == (4 * 32 * 3, 256)
    assert len(decoder.stages) == 6 and decoder.content_dim == 256
    assert decoder.featmap_strides == [4, 8, 16, 32]
    assert decoder.stage_loss_weights == [1.0] * 6
    assert decoder.mixing.out_points == 128
    crit = decoder.criterion
    assert (crit.loss_cls.loss_weight, crit.loss_cls.gamma,
            crit.loss_cls.alpha) == (2.0, 2.0, 0.25)
    assert crit.loss_bbox.loss_weight == 5.0
    assert crit.loss_iou.loss_weight == 2.0
    assert [(type(c).__name__, c.weight)
            for c in crit.assigner.match_costs] == [('FocalLossCost', 2.0),
                                                    ('BBoxL1Cost', 5.0),
                                                    ('IoUCost', 2.0)]


def test_neck_defaults_and_group_check():
    neck = ChannelMapping([8, 16])
    assert neck.out_channels == 256 and neck.gn_out.num_groups == 32
    # a 1x1 conv per level: every map keeps its size
    assert neck.lateral_convs[1].conv.weight.shape == (256, 16, 1, 1)
    outs = neck([torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5)])
    assert [o.shape for o in outs] == [(2, 256, 12, 10), (2, 256, 6, 5)]
    with pytest.raises(ValueError, match='GroupNorm groups=32'):
        ChannelMapping([8], out_channels=48)
    with pytest.raises(ValueError, match='got 1 feature maps'):
        neck([torch.randn(1, 8, 4, 4)])
