import pytest
import torch

from lors_det.lors import LORSTLinear


def randomise_private(layer: LORSTLinear) -> None:
    with torch.no_grad():
        for B, b in zip(layer.private_B, layer.private_bias):
            B.normal_()
            b.normal_()


def test_init_every_layer_equals_shared_layer():
    layer = LORSTLinear(32, 16, num_layers=4, rank=3, num_factors=2)
    x = torch.randn(5, 32)
    shared = x @ layer.shared_weight.t()
    for i in range(4):
        assert torch.count_nonzero(layer.delta_weight(i)) == 0
        assert torch.equal(layer(x, i), shared)
    # but the low-rank factors A are not zero (so B gets a gradient)
    assert all(A.abs().sum() > 0 for A in layer.private_A)


def test_shapes_and_rank_of_residual():
    layer = LORSTLinear(
        40, 24, num_layers=3, rank=[2, 3, 4], num_factors=[1, 2, 3]).double()
    randomise_private(layer)
    for i, (k, r) in enumerate(zip([1, 2, 3], [2, 3, 4])):
        assert layer.private_A[i].shape == (k * r, 40)
        assert layer.private_B[i].shape == (24, k * r)
        delta = layer.delta_weight(i)
        assert torch.linalg.matrix_rank(delta) <= k * r
        assert layer(torch.randn(2, 7, 40).double(), i).shape == (2, 7, 24)


def test_merge_unmerge_with_nonzero_private_part():
    layer = LORSTLinear(32, 16, num_layers=3, rank=4).eval()
    randomise_private(layer)
    x = torch.randn(6, 32)
    before = [layer(x, i) for i in range(3)]
    params = {n: p.clone() for n, p in layer.named_parameters()}
    layer.merge()
    assert layer.merged
    for i in range(3):
        torch.testing.assert_close(layer(x, i), before[i])
    # merged layers differ from each other (the private parts are real)
    assert not torch.allclose(layer(x, 0), layer(x, 1))
    layer.unmerge()
    assert not layer.merged
    for n, p in layer.named_parameters():
        assert torch.equal(p, params[n])
    for i in range(3):
        torch.testing.assert_close(layer(x, i), before[i])


def test_merged_stack_refuses_training_mode():
    layer = LORSTLinear(8, 8, num_layers=2, rank=2)
    layer.merge()
    x = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match='unmerge'):
        layer(x, 0)
    layer.eval()
    layer(x, 0)


def test_merge_rejects_non_finite_weights():
    layer = LORSTLinear(8, 8, num_layers=2, rank=2)
    with torch.no_grad():
        layer.private_B[1].fill_(float('nan'))
    with pytest.raises(ValueError, match='not finite'):
        layer.merge()


def test_gradient_reaches_shared_weight_from_every_layer():
    layer = LORSTLinear(16, 8, num_layers=3, rank=2)
    x = torch.randn(4, 16)
    for i in range(3):
        layer.zero_grad()
        layer(x, i).sum().backward()
        assert layer.shared_weight.grad.abs().sum() > 0
        assert layer.private_B[i].grad.abs().sum() > 0
        others = [j for j in range(3) if j != i]
        assert all(layer.private_B[j].grad is None for j in others)


def test_shared_only_and_private_only():
    shared_only = LORSTLinear(16, 8, num_layers=2, rank=2, use_private=False)
    assert sum(p.numel() for p in shared_only.private_A) == 0
    private_only = LORSTLinear(16, 8, num_layers=2, rank=2, use_shared=False)
    assert private_only.shared_weight is None
    x = torch.randn(3, 16)
    assert torch.count_nonzero(
        private_only(x, 0) - private_only.private_bias[0]) == 0


@pytest.mark.parametrize('kwargs, field', [
    (dict(rank=9), 'rank'),
    (dict(rank=0), 'rank'),
    (dict(rank=[2, 2]), 'rank'),
    (dict(num_factors=[1, 1, 1, 1]), 'num_factors'),
    (dict(use_shared=False, use_private=False), 'use_shared'),
    (dict(use_private='no'), 'use_private must be True or False'),
    (dict(use_shared=0), 'use_shared must be True or False'),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LORSTLinear(16, 8, num_layers=3, **kwargs)


@pytest.mark.parametrize(
    'kwargs', [{}, dict(use_shared=False),
               dict(use_private=False)])
def test_low_rank_forward_equals_dense_weight_with_gradients(kwargs):
    """``x W_shared^T + (x A^T) B^T + b`` == ``x (W_shared + B A)^T + b`` in
    outputs and in the gradients of the input and of every parameter."""
    layer = LORSTLinear(
        20, 12, num_layers=2, rank=3, num_factors=2, **kwargs).double()
    randomise_private(layer)
    x = torch.randn(2, 5, 20, dtype=torch.double, requires_grad=True)
    params = [x, *layer.parameters()]
    for i in range(2):
        fast = layer(x, i)
        ref = torch.nn.functional.linear(x, layer.layer_weight(i),
                                         layer.private_bias[i])
        torch.testing.assert_close(fast, ref)
        w = torch.randn_like(fast)
        g_fast = torch.autograd.grad(
            (fast * w).sum(), params, allow_unused=True)
        g_ref = torch.autograd.grad((ref * w).sum(), params, allow_unused=True)
        for a, b in zip(g_fast, g_ref):
            if a is None or b is None:  # other layer's parameters
                assert a is None or not a.any()
                assert b is None or not b.any()
            else:
                torch.testing.assert_close(a, b)


def test_low_rank_forward_under_bfloat16_autocast():
    """Under autocast the layer computes in bfloat16 like ``F.linear`` would,
    and its float32 parameters get float32 gradients close to the float32
    ones (bfloat16 keeps ~3 significant digits: compared by relative norm)."""
    torch.manual_seed(0)
    layer = LORSTLinear(64, 16, num_layers=2, rank=4)
    randomise_private(layer)
    x = torch.randn(3, 64)
    ref = layer(x, 1)
    ref.square().sum().backward()
    ref_grads = [
        p.grad.clone() for p in layer.parameters() if p.grad is not None
    ]
    layer.zero_grad()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(x, 1)
    assert out.dtype == torch.bfloat16

    def rel_err(a, b):
        return float((a.float() - b).norm() / b.norm())

    assert rel_err(out, ref) < 0.02
    out.float().square().sum().backward()
    grads = [p.grad for p in layer.parameters() if p.grad is not None]
    assert len(grads) == len(ref_grads) == 4  # W_shared, A_1, B_1, b_1
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.float32
        assert rel_err(g, r) < 0.05


def test_defaults_are_the_papers_rank_and_one_term():
    layer = LORSTLinear(32, 16, num_layers=3)
    assert layer.ranks == [8] * 3 and layer.num_factors == [1] * 3
    assert layer.shared_weight is not None and layer.private_A[0].numel()


def test_input_gradient_with_a_frozen_shared_weight():
    """Training only the private parts (``W_shared`` frozen, peft-style)
    still passes the gradient on to the input."""
    layer = LORSTLinear(12, 6, num_layers=2, rank=2).double()
    randomise_private(layer)
    layer.shared_weight.requires_grad_(False)
    x = torch.randn(4, 12, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.double)
    grad_x, = torch.autograd.grad((layer(x, 1) * w).sum(), x)
    torch.testing.assert_close(grad_x, w @ layer.layer_weight(1))


def test_frozen_shared_weight_costs_no_weight_gradient():
    """With ``W_shared`` frozen, backward skips its gradient GEMM (rows x
    in x out multiply-adds): exactly that much less work, same input
    gradient."""
    from torch.utils.flop_counter import FlopCounterMode
    layer = LORSTLinear(24, 10, num_layers=2, rank=2).double()
    randomise_private(layer)
    x = torch.randn(7, 24, dtype=torch.double, requires_grad=True)

    def backward_flops():
        layer.zero_grad()
        x.grad = None
        y = layer(x, 1)
        with FlopCounterMode(display=False) as counter:
            y.sum().backward()  # every gradient that is required
        return counter.get_total_flops(), x.grad.clone()

    trained, grad_trained = backward_flops()
    layer.shared_weight.requires_grad_(False)
    frozen, grad_frozen = backward_flops()
    assert trained - frozen == 2 * 7 * 24 * 10  # 2 flops per multiply-add
    torch.testing.assert_close(grad_frozen, grad_trained)
    assert layer.shared_weight.grad is None
    assert layer.private_B[1].grad.abs().sum() > 0


def test_rank_one_layer_keeps_its_private_part():
    layer = LORSTLinear(10, 6, num_layers=2, rank=1)
    randomise_private(layer)
    x = torch.randn(3, 10)
    ref = torch.nn.functional.linear(x, layer.layer_weight(1),
                                     layer.private_bias[1])
    torch.testing.assert_close(layer(x, 1), ref)
    assert not torch.allclose(layer(x, 1), layer(x, 0))
