"""A batch gives what its images give one at a time.

Two images of different sizes are padded to one batch shape (as mmdet's
data preprocessor does); each image alone is fed with the same padding,
since the neck's GroupNorm statistics include the padded area. Computed in
float64 so that no top-k order depends on float32 rounding, on the LORS
model (its plain counterpart differs only in the mixing stacks).
"""
import torch
from helpers import SYNTHETIC, build_model
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

PAD = (64, 64)
SIZES = [(64, 48), (40, 64)]  # (h, w) of the two valid images
NUM_GTS = [3, 1]


def padded_batch():
    g = torch.Generator().manual_seed(0)
    inputs = torch.zeros(len(SIZES), 3, *PAD, dtype=torch.double)
    samples = []
    for i, ((h, w), n) in enumerate(zip(SIZES, NUM_GTS)):
        inputs[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.6
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.3 + 4
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(2 * h, 2 * w),
                pad_shape=PAD,
                batch_input_shape=PAD,
                scale_factor=(0.5, 0.5)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1).double(),
            labels=torch.randint(0, 3, (n, ), generator=g))
        samples.append(sample)
    return inputs, samples


def trained_like(name):
    """A tiny model with the zero-initialised parts randomised, so that
    queries, stages and images give different outputs."""
    torch.manual_seed(0)
    model = build_model(SYNTHETIC[name]).double()
    with torch.no_grad():
        for n, p in model.decoder.named_parameters():
            if p.dim() > 1 and torch.count_nonzero(p) == 0:
                p.normal_(std=0.05)
    return model


def test_predict_batch_equals_one_image_at_a_time():
    model = trained_like('lors').eval()
    inputs, samples = padded_batch()
    with torch.no_grad():
        # predict() stores into the samples it is given: read it at once
        batch = [
            r.pred_instances.clone() for r in model.predict(inputs, samples)
        ]
        single = [
            model.predict(inputs[i:i + 1],
                          [samples[i]])[0].pred_instances.clone()
            for i in range(len(samples))
        ]
    for b, s in zip(batch, single):
        torch.testing.assert_close(b.bboxes, s.bboxes)
        torch.testing.assert_close(b.scores, s.scores)
        assert torch.equal(b.labels, s.labels)
    # the two images really differ (sizes, content)
    assert not torch.allclose(batch[0].bboxes, batch[1].bboxes)


def test_loss_batch_equals_images_weighted_by_their_objects():
    """Every loss is summed over the batch and divided by its number of
    matched queries (= objects), so ``L_batch = sum_i n_i L_i / sum_i n_i``
    with ``L_i`` image i's loss alone."""
    model = trained_like('lors').train()
    model.backbone.eval()  # BatchNorm's batch statistics mix the images
    inputs, samples = padded_batch()
    batch = model.loss(inputs, samples)
    single = [
        model.loss(inputs[i:i + 1], [samples[i]]) for i in range(len(samples))
    ]
    assert set(batch) == set(single[0])
    total = sum(NUM_GTS)
    for key, value in batch.items():
        expected = sum(n * s[key] for n, s in zip(NUM_GTS, single)) / total
        torch.testing.assert_close(value, expected)
    assert not torch.allclose(single[0]['s5.loss_cls'],
                              single[1]['s5.loss_cls'])
