"""The AMP path on CPU: bfloat16 autocast over the decoder gives finite
losses and gradients, and the mixing itself stays in float32."""
import torch
from helpers import SYNTHETIC, build_model, make_batch

from lors_det.models.layers import mix


def test_mix_runs_in_float32_under_autocast():
    x, M, S = (torch.randn(1, 2, 2, 4,
                           8), torch.randn(1, 2, 2, 8,
                                           8), torch.randn(1, 2, 2, 6, 4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = mix(x.bfloat16(), M.bfloat16(), S.bfloat16())
    assert out.dtype == torch.float32


def test_bf16_autocast_training_step_is_finite():
    torch.manual_seed(0)
    model = build_model(SYNTHETIC['lors'])
    inputs, samples = make_batch(num_gts=(3, 1))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
