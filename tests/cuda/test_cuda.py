"""The code on a CUDA GPU (skipped without one; ``tools/analysis/
gpu_check.sh`` runs them with ``-m cuda``): the same losses and gradients
as on the CPU, fp16 autocast with the mixing kept in float32, and merged
LORS inference equal to unmerged."""
import pytest
import torch
from helpers import SYNTHETIC, build_model, make_batch

from lors_det.models.layers import mix

DEVICE = 'cuda'
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE == 'cuda' and not torch.cuda.is_available(),
        reason='needs a CUDA GPU')
]


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 matmuls and convolutions: compare with the CPU, not
    with TF32's 10-bit mantissa."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved


def lors_model_with_private_parts():
    torch.manual_seed(0)
    model = build_model(SYNTHETIC['lors'])
    with torch.no_grad():  # non-zero private parts: every term counts
        for name, p in model.decoder.mixing.named_parameters():
            if 'private' in name or 'factors' in name:
                p.normal_(std=0.05)
    return model


def to_device(inputs, samples, device):
    return inputs.to(device), [s.to(device) for s in samples]


def test_losses_and_gradients_match_the_cpu():
    cpu = lors_model_with_private_parts()
    gpu = lors_model_with_private_parts().to(DEVICE)
    inputs, samples = make_batch(num_gts=(3, 1))
    results = []
    for model, device in ((cpu, 'cpu'), (gpu, DEVICE)):
        losses = model.loss(*to_device(inputs, samples, device))
        sum(losses.values()).backward()
        results.append((losses, {
            n: p.grad
            for n, p in model.decoder.named_parameters() if p.grad is not None
        }))
    (loss_cpu, grad_cpu), (loss_gpu, grad_gpu) = results
    assert loss_cpu.keys() == loss_gpu.keys()
    for key in loss_cpu:
        torch.testing.assert_close(
            loss_gpu[key].cpu(), loss_cpu[key], rtol=1e-4, atol=1e-5, msg=key)
    assert grad_cpu.keys() == grad_gpu.keys() and grad_cpu
    for name in grad_cpu:
        torch.testing.assert_close(
            grad_gpu[name].cpu(),
            grad_cpu[name],
            rtol=1e-3,
            atol=1e-5,
            msg=name)


def test_fp16_autocast_step_is_finite_and_mixing_stays_float32():
    x, M, S = (torch.randn(1, 2, 2, 4, 8, device=DEVICE),
               torch.randn(1, 2, 2, 8, 8, device=DEVICE),
               torch.randn(1, 2, 2, 6, 4, device=DEVICE))
    with torch.autocast(DEVICE, dtype=torch.float16):
        assert mix(x.half(), M.half(), S.half()).dtype == torch.float32
    model = lors_model_with_private_parts().to(DEVICE)
    inputs, samples = to_device(*make_batch(num_gts=(3, 1)), DEVICE)
    with torch.autocast(DEVICE, dtype=torch.float16):
        losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_merged_inference_equals_unmerged():
    model = lors_model_with_private_parts().to(DEVICE).eval()
    inputs, samples = to_device(*make_batch(num_images=2), DEVICE)
    with torch.no_grad():
        ref = model.predict(inputs, samples)
        model.merge_lors()
        merged = model.predict(inputs, samples)
    for a, b in zip(ref, merged):
        torch.testing.assert_close(
            b.pred_instances.bboxes,
            a.pred_instances.bboxes,
            rtol=1e-4,
            atol=1e-3)
        torch.testing.assert_close(
            b.pred_instances.scores,
            a.pred_instances.scores,
            rtol=1e-4,
            atol=1e-5)
