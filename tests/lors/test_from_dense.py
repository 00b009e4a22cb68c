"""LORS stacks initialised from trained dense stacks (lors/from_dense.py).

Exactness where the structure allows it (full rank; residuals that are
exactly low-rank or exactly Tucker-2), least-squares behaviour elsewhere
(error falls with rank, refinement never hurts), and the refusals.
"""
import pytest
import torch

import lors_det.lors.from_dense as fd
from lors_det.lors import (LORSAGenerator, LORSTLinear, StackedGenerator,
                           StackedLinear)
from lors_det.lors.from_dense import (FromDenseError, lorsa_from_dense,
                                      lorsa_rank_for_energy, lorst_from_dense,
                                      lorst_rank_for_energy, tucker2_fit)

N, C = 4, 12
SHAPES = [(8, 8), (6, 4)]  # an ACM-like (c, c) and an ASM-like (P_out, P_in)
G = 2


def dense_linears(out_f=16, in_f=24, seed=0):
    torch.manual_seed(seed)
    dense = StackedLinear(in_f, out_f, N).double()
    for layer in dense.layers:
        layer.bias.data.normal_()
    return dense


def dense_generators(seed=0):
    torch.manual_seed(seed)
    dense = StackedGenerator(C, SHAPES, G, N).double()
    for layer in dense.layers:  # zero-initialised: give them values
        layer.weight.data.normal_()
        layer.bias.data.normal_()
    return dense


def wb(stack):
    return ([m.weight for m in stack.layers], [m.bias for m in stack.layers])


def lorst(rank, k=1, **kw):
    return LORSTLinear(24, 16, N, rank=rank, num_factors=k, **kw).double()


def lorsa(rank, k, **kw):
    return LORSAGenerator(
        C, SHAPES, G, N, rank=rank, num_factors=k, **kw).double()


def assert_same_layers(lors, dense, x):
    for i in range(N):
        out, ref = lors(x, i), dense(x, i)
        for a, b in zip(
                out if isinstance(out, list) else [out],
                ref if isinstance(ref, list) else [ref]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize('rank, k', [(16, 1), (8, 2)])
def test_lorst_full_rank_is_exact(rank, k):
    dense = dense_linears()
    stack = lorst(rank, k)
    fits = lorst_from_dense(stack, *wb(dense))
    assert all(f.rel_error < 1e-13 and f.energy_kept == pytest.approx(1)
               for f in fits)
    assert_same_layers(stack, dense, torch.randn(5, 24, dtype=torch.double))
    # the shared weight is the mean, the biases are carried over exactly
    torch.testing.assert_close(stack.shared_weight,
                               torch.stack(wb(dense)[0]).mean(0))
    for b, layer in zip(stack.private_bias, dense.layers):
        assert torch.equal(b, layer.bias)


def test_lorst_exactly_low_rank_residuals_are_recovered():
    torch.manual_seed(1)
    shared = torch.randn(16, 24, dtype=torch.double)
    # residuals in +- pairs, so their mean is zero and W_shared = shared
    deltas = [
        torch.randn(16, 3, dtype=torch.double) @ torch.randn(
            3, 24, dtype=torch.double) for _ in range(N // 2)
    ]
    deltas = [s * d for d in deltas for s in (1, -1)]
    weights = [shared + d for d in deltas]
    biases = [torch.randn(16, dtype=torch.double) for _ in range(N)]
    stack = lorst(3)
    fits = lorst_from_dense(stack, weights, biases)
    assert max(f.rel_error for f in fits) < 1e-13
    torch.testing.assert_close(stack.shared_weight, shared)
    for i, d in enumerate(deltas):
        torch.testing.assert_close(stack.delta_weight(i), d)


def test_lorst_error_falls_with_rank_as_the_singular_values_say():
    dense = dense_linears()
    weights, biases = wb(dense)
    errors = []
    for rank in range(1, 17):
        fits = lorst_from_dense(lorst(rank), weights, biases)
        errors.append([f.rel_error for f in fits])
    for lo, hi in zip(errors, errors[1:]):
        assert all(b <= a + 1e-12 for a, b in zip(lo, hi))
    assert errors[-1][0] < 1e-12 < errors[-2][0]
    # energy kept = squared singular values kept (Eckart-Young)
    d = weights[0].detach() - torch.stack(weights).mean(0).detach()
    s2 = torch.linalg.svdvals(d)**2
    fit = lorst_from_dense(lorst(5), weights, biases)[0]
    assert fit.energy_kept == pytest.approx(float(s2[:5].sum() / s2.sum()))


def test_lorst_rank_for_energy_is_the_smallest_reaching_it():
    weights, biases = wb(dense_linears())
    rank = lorst_rank_for_energy(lorst(1), weights, biases, 0.8)
    kept = [
        min(
            f.energy_kept for f in lorst_from_dense(lorst(r), weights, biases))
        for r in (rank - 1, rank)
    ]
    assert kept[0] < 0.8 <= kept[1]


def test_lorst_ablations_convert():
    weights, biases = wb(dense_linears())
    private_only = lorst(16, use_shared=False)
    assert max(
        f.rel_error
        for f in lorst_from_dense(private_only, weights, biases)) < 1e-13
    shared_only = lorst(4, use_private=False)
    fits = lorst_from_dense(shared_only, weights, biases)
    assert all(f.num_factors == 0 and f.energy_kept == 0 for f in fits)


def test_lorsa_full_block_cover_is_exact():
    """r = 4: the (8, 8) matrices need 2 x 2 blocks, the (6, 4) ones 2 x 1;
    K = 4 terms cover both, so the conversion is exact."""
    dense = dense_generators()
    stack = lorsa(4, 4)
    fits = lorsa_from_dense(stack, *wb(dense))
    assert max(f.rel_error for f in fits) < 1e-12
    assert_same_layers(stack, dense, torch.randn(2, 3, C, dtype=torch.double))
    for i in range(N):  # and the merge of the converted stack
        w, b = stack.dense_layer(i)
        torch.testing.assert_close(w, dense.layers[i].weight)
        torch.testing.assert_close(b, dense.layers[i].bias)


def paired_tucker_stack(rank, k, seed=2):
    """Dense generators whose residuals around their mean are exactly K
    Tucker-2 terms of rank r: a random LORSA stack with non-zero cores,
    layers in pairs with negated cores (so the private parts average to
    zero and the mean is the shared generator)."""
    torch.manual_seed(seed)
    truth = lorsa(rank, k)
    with torch.no_grad():
        truth.shared_generator.weight.normal_()
        for i in range(0, N, 2):
            truth.private_generators[i].weight.normal_()
            truth.private_generators[i].bias.normal_()
            for kinds in (truth.left_factors, truth.right_factors):
                for factors in kinds:  # one ParameterList per matrix kind
                    factors[i + 1].copy_(factors[i])
            truth.private_generators[i + 1].weight.copy_(
                -truth.private_generators[i].weight)
            truth.private_generators[i + 1].bias.copy_(
                -truth.private_generators[i].bias)
    weights, biases = zip(*(truth.dense_layer(i) for i in range(N)))
    return truth, list(weights), list(biases)


def test_lorsa_exactly_tucker2_residuals_are_recovered():
    truth, weights, biases = paired_tucker_stack(rank=3, k=1)
    stack = lorsa(3, 1)
    fits = lorsa_from_dense(stack, weights, biases)
    assert max(f.rel_error for f in fits) < 1e-12
    assert min(f.energy_kept for f in fits) == pytest.approx(1)
    q = torch.randn(2, 3, C, dtype=torch.double)
    for i in range(N):
        for a, b in zip(stack(q, i), truth(q, i)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_lorsa_k_term_residuals_need_their_blocks_or_refinement():
    """Two Tucker-2 terms of rank 2 in (8, 8): neither start (HOSVD blocks,
    deflation) holds them exactly in 2 terms, 4 blocks of the 4-dim span
    do; HOOI sweeps lower the 2-term error monotonically."""
    truth, weights, biases = paired_tucker_stack(rank=2, k=2, seed=3)
    two = [
        max(
            f.rel_error for f in lorsa_from_dense(
                lorsa(2, 2), weights, biases, refine_steps=s))
        for s in (0, 2, 8)
    ]
    assert two[0] > 1e-3
    assert two[0] >= two[1] >= two[2]
    # 4 terms: the 2 x 2 blocks of the 4-dim spans of the (8, 8) kind, and
    # the (6, 4) kind's 2 x 2
    four = lorsa_from_dense(lorsa(2, 4), weights, biases)
    assert max(f.rel_error for f in four) < 1e-12


def test_lorsa_error_falls_with_rank():
    weights, biases = wb(dense_generators())
    for k in (1, 2):
        errors = [[
            f.rel_error
            for f in lorsa_from_dense(lorsa(r, k), weights, biases)
        ] for r in (1, 2, 3, 4)]
        for lo, hi in zip(errors, errors[1:]):
            assert all(b <= a + 1e-12 for a, b in zip(lo, hi)), (k, errors)


def test_hooi_refinement_never_hurts_and_helps_on_a_generic_stack():
    weights, biases = wb(dense_generators())
    errors = [
        sum(
            f.rel_error for f in lorsa_from_dense(
                lorsa(2, [1, 1, 2, 3]), weights, biases, refine_steps=s))
        for s in (0, 1, 3)
    ]
    assert errors[0] > errors[1] + 1e-3 and errors[1] >= errors[2] - 1e-12


def two_term_tensor(seed=5):
    """Two random rank-2 Tucker-2 terms in (8, 6, 9) plus a little noise:
    deflation finds them one after the other, HOSVD blocks cannot."""
    g = torch.Generator().manual_seed(seed)
    T = 1e-3 * torch.randn(8, 6, 9, generator=g, dtype=torch.double)
    for scale in (1.0, 0.5):
        L, R = (torch.randn(8, 2, generator=g, dtype=torch.double),
                torch.randn(2, 6, generator=g, dtype=torch.double))
        Z = torch.randn(2, 2, 9, generator=g, dtype=torch.double)
        T = T + scale * torch.einsum('ma,abp,bn->mnp', L, Z, R)
    return T


def test_tucker2_fit_keeps_the_better_start():
    T = two_term_tensor()
    starts = []
    for init in (fd._block_init, fd._deflation_init):
        L, R = init(T, 2, 2)
        starts.append(fd._sq_error(T, L, fd._joint_cores(T, L, R), R))
    assert starts[1] < 0.5 * starts[0]  # the case where the choice matters
    assert fd._sq_error(T, *tucker2_fit(T, 2, 2)) == pytest.approx(
        min(starts), rel=1e-9)


@pytest.mark.parametrize('steps', [0, 3])
def test_tucker2_cores_are_least_squares_for_the_final_factors(steps):
    """Normal equations: what is left is orthogonal to every term's span,
    L_k^T (T - sum_l L_l Z_l R_l) R_k^T = 0 for each k."""
    T = two_term_tensor(6) + 0.3 * torch.randn(8, 6, 9, dtype=torch.double)
    L, Z, R = tucker2_fit(T, 2, 3, refine_steps=steps)
    left = T - fd._approx(L, Z, R)
    grad = torch.einsum('kma,mnp,kbn->kabp', L, left, R)
    assert grad.abs().max() < 1e-10 * T.abs().max()


def test_tucker2_fit_is_the_projection_for_k1():
    """K = 1: cores are L^T T R^T for the HOSVD factors."""
    torch.manual_seed(4)
    T = torch.randn(6, 5, 7, dtype=torch.double)
    L, Z, R = tucker2_fit(T, 3, 1)
    U = torch.linalg.svd(T.reshape(6, -1), full_matrices=False)[0][:, :3]
    torch.testing.assert_close(L[0] @ L[0].t(), U @ U.t())
    torch.testing.assert_close(Z[0],
                               torch.einsum('ma,mnp,bn->abp', L[0], T, R[0]))


def test_lorsa_rank_for_energy_is_the_smallest_reaching_it():
    weights, biases = wb(dense_generators())

    def factory(r):
        return lorsa(r, 1)

    rank, fits = lorsa_rank_for_energy(factory, weights, biases, 0.3, top=4)
    assert rank > 1 and min(f.energy_kept for f in fits) >= 0.3
    below = lorsa_from_dense(lorsa(rank - 1, 1), weights, biases)
    assert min(f.energy_kept for f in below) < 0.3
    with pytest.raises(FromDenseError, match='no rank reaches energy'):
        lorsa_rank_for_energy(factory, weights, biases, 0.999, top=1)


def test_bad_inputs_are_refused_naming_the_stack():
    weights, biases = wb(dense_linears())
    with pytest.raises(
            FromDenseError,
            match='out_proj: 3 dense layers for '
            'a LORS stack of 4'):
        lorst_from_dense(lorst(4), weights[:3], biases[:3], 'out_proj')
    with pytest.raises(
            FromDenseError,
            match=r'dense layer 0 is weight '
            r'\(16, 24\).*expects weight \(24, 16\)'):
        lorst_from_dense(LORSTLinear(16, 24, N).double(), weights, biases)
    with pytest.raises(
            FromDenseError,
            match='rank x num_factors = 18, more '
            'than its residual.*allows; expected <= 16'):
        lorst_from_dense(lorst(9, 2), weights, biases)
    gw, gb = wb(dense_generators())
    with pytest.raises(FromDenseError, match='gen: dense layer 0'):
        lorsa_from_dense(
            LORSAGenerator(C, [(8, 8)], G, N, rank=4).double(),
            gw,
            gb,
            name='gen')
