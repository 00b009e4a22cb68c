"""A float64 model computes in float64 end to end (nothing is cast down to
float32 outside autocast), e.g. for gradient checks and exact comparisons."""
import pytest
import torch
from helpers import SYNTHETIC, build_model, make_batch

from lors_det.models.layers import mix


def test_mix_keeps_float64_outside_autocast():
    x, M, S = (torch.randn(1, 2, 2, 4, 8, dtype=torch.double),
               torch.randn(1, 2, 2, 8, 8, dtype=torch.double),
               torch.randn(1, 2, 2, 6, 4, dtype=torch.double))
    assert mix(x, M, S).dtype == torch.float64


@pytest.mark.parametrize('name', sorted(SYNTHETIC))
def test_float64_model_outputs_and_losses_are_float64(name):
    torch.manual_seed(0)
    model = build_model(SYNTHETIC[name]).double()
    inputs, samples = make_batch(num_images=1, num_gts=(2, ))
    inputs = inputs.double()
    for sample in samples:  # targets in the model's dtype too
        sample.gt_instances.bboxes = sample.gt_instances.bboxes.double()
    model.eval()
    seen = []  # dtypes of every floating tensor entering or leaving a module

    def record(module, args, out):
        for t in (*args, *(out if isinstance(out, (list, tuple)) else [out])):
            if torch.is_tensor(t) and t.is_floating_point():
                seen.append((type(module).__name__, t.dtype))

    for m in model.modules():
        m.register_forward_hook(record)
    with torch.no_grad():
        stages = model._forward(inputs, samples)
        pred = model.predict(inputs, samples)[0].pred_instances
    assert {'LORSTLinear', 'StackedLinear'} & {m for m, _ in seen}
    assert {(m, d) for m, d in seen if d != torch.float64} == set()
    for cls_score, boxes in stages:
        assert cls_score.dtype == boxes.dtype == torch.float64
    assert pred.bboxes.dtype == pred.scores.dtype == torch.float64
    model.train()
    losses = model.loss(inputs, samples)
    assert all(v.dtype == torch.float64 and torch.isfinite(v)
               for v in losses.values())
    sum(losses.values()).backward()
    grad = model.decoder.mixing.out_proj.parameters().__next__().grad
    assert grad is not None and grad.dtype == torch.float64
