import logging

import pytest
import torch
from helpers import SYNTHETIC, build_model, load_config, make_batch
from mmengine.logging import MMLogger

from lors_det.lors import count_parameters


def test_loss_keys_and_finite_values(tiny_model):
    inputs, samples = make_batch(num_gts=(3, 1))
    losses = tiny_model.loss(inputs, samples)
    expected = {
        f's{i}.{k}'
        for i in range(6) for k in ('loss_cls', 'loss_bbox', 'loss_iou')
    }
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_empty_ground_truth_gives_zero_box_loss(tiny_model):
    inputs, samples = make_batch(num_gts=(0, 0))
    losses = tiny_model.loss(inputs, samples)
    for i in range(6):
        assert losses[f's{i}.loss_cls'] > 0
        assert losses[f's{i}.loss_bbox'] == 0
        assert losses[f's{i}.loss_iou'] == 0
    sum(losses.values()).backward()  # graph stays connected


def test_predictions_are_in_original_image_coordinates(tiny_model):
    tiny_model.eval()
    inputs, samples = make_batch(size=64)
    with torch.no_grad():  # rescale=True is the default (mmengine's call)
        results = tiny_model.predict(inputs, samples)
    n = tiny_model.num_queries
    for r in results:
        pred = r.pred_instances
        assert pred.bboxes.shape == (n, 4)
        assert pred.scores.shape == (n, ) and pred.labels.shape == (n, )
        # at init every query box is the whole 64 px input image, which is
        # 128 px in the original image (scale_factor 0.5)
        torch.testing.assert_close(
            pred.bboxes,
            torch.tensor([[0., 0., 128., 128.]]).expand(n, 4))
        assert ((pred.labels >= 0) & (pred.labels < 3)).all()
    with torch.no_grad():
        unscaled = tiny_model.predict(inputs, samples, rescale=False)
    assert unscaled[0].pred_instances.bboxes.max() == 64


def test_num_queries_is_one_config_field_that_reaches_the_model():
    cfg = load_config(SYNTHETIC['lors'])
    cfg.model.query_generator.num_queries = 7
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model).eval()
    inputs, samples = make_batch(num_images=1)
    with torch.no_grad():
        out = model._forward(inputs)
        pred = model.predict(inputs, samples)
    assert out[-1][0].shape[1] == 7
    assert len(pred[0].pred_instances) == 7


def test_training_steps_give_gradients_to_every_trainable_parameter(
        tiny_model):
    optim = torch.optim.AdamW(tiny_model.parameters(), lr=1e-4)
    inputs, samples = make_batch(num_gts=(3, 2))
    seen = set()
    for _ in range(3):
        optim.zero_grad()
        loss = sum(tiny_model.loss(inputs, samples).values())
        assert torch.isfinite(loss)
        loss.backward()
        seen |= {
            n
            for n, p in tiny_model.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0
        }
        optim.step()
    trainable = {
        n
        for n, p in tiny_model.named_parameters() if p.requires_grad
    }
    assert trainable - seen == set()
    frozen = {
        n
        for n, p in tiny_model.named_parameters() if not p.requires_grad
    }
    assert frozen == {'query_generator.init_proposal_bboxes.weight'}


def test_lors_stages_share_one_mixing_and_start_equal():
    model = build_model(SYNTHETIC['lors'])
    mixing = model.decoder.mixing
    # the shared parts exist once, not per stage
    names = [n for n, _ in model.named_parameters() if 'shared' in n]
    assert names == [
        'decoder.mixing.generator.shared_generator.weight',
        'decoder.mixing.generator.shared_generator.bias',
        'decoder.mixing.out_proj.shared_weight'
    ]
    x = torch.randn(2, 4, 2, 16, 32)
    q = torch.randn(2, 4, 64)
    outs = [mixing(x, q, stage=i) for i in range(6)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])


def test_building_logs_shared_private_and_total_parameters():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        model = build_model(SYNTHETIC['lors'])
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records if 'parameters' in r.getMessage()]
    assert len(lines) == 1
    decoder = count_parameters(model.decoder)
    assert decoder['shared'] > 0 and decoder['private'] > 0
    assert f'{count_parameters(model)["total"]:,} parameters' in lines[0]
    for key in ('total', 'shared', 'private'):
        assert f'{decoder[key]:,}' in lines[0]


def test_neck_queries_and_decoder_must_agree():
    from mmdet.registry import MODELS
    for change, field in ((dict(neck=dict(out_channels=32)),
                           'neck.out_channels=32'),
                          (dict(query_generator=dict(content_dim=32)),
                           'query_generator.content_dim=32'),
                          (dict(decoder=dict(featmap_strides=[4, 8, 16])),
                           'featmap_strides')):
        cfg = load_config(SYNTHETIC['adamixer'])
        cfg.merge_from_dict({f'model.{k}': v for k, v in change.items()})
        with pytest.raises(ValueError, match=field):
            MODELS.build(cfg.model)


def test_max_per_img_is_honoured_and_checked():
    from mmdet.registry import MODELS
    cfg = load_config(SYNTHETIC['adamixer'])
    cfg.model.test_cfg = dict(max_per_img=5)
    model = MODELS.build(cfg.model).eval()
    inputs, samples = make_batch(num_images=1)
    with torch.no_grad():
        pred = model.predict(inputs, samples)[0].pred_instances
    assert len(pred) == 5
    cfg.model.test_cfg = dict(max_per_img=0)
    with pytest.raises(ValueError, match='max_per_img'):
        MODELS.build(cfg.model)
