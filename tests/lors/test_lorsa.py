import pytest
import torch

from lors_det.lors import LORSAGenerator, StackedGenerator, split_matrices

SHAPES = [(8, 8), (12, 6)]  # M (c x c) and S (P_out x P_in)


def make(**kwargs):
    args = dict(
        query_dim=16,
        matrix_shapes=SHAPES,
        num_groups=2,
        num_layers=3,
        rank=3,
        num_factors=[1, 2, 3])
    args.update(kwargs)
    return LORSAGenerator(**args)


def randomise(gen):
    with torch.no_grad():
        for p in gen.parameters():
            p.normal_()


def test_init_every_layer_generates_the_shared_matrices():
    gen = make()
    q = torch.randn(2, 5, 16)
    shared = gen.shared_matrices(q)
    for i in range(3):
        assert all(
            torch.count_nonzero(p) == 0 for p in gen.private_matrices(q, i))
        for w, s in zip(gen(q, i), shared):
            assert torch.equal(w, s)
    assert torch.count_nonzero(gen.shared_generator.weight) == 0
    assert all(f.abs().sum() > 0 for fs in gen.left_factors for f in fs)


def test_reset_parameters_restores_the_init():
    gen = make()
    randomise(gen)
    gen.reset_parameters()
    shared = gen.shared_generator
    assert torch.count_nonzero(shared.weight) == 0
    # the shared bias is re-drawn with nn.Linear's default init
    assert 0 < shared.bias.abs().max() <= 1 / 16**0.5
    for private in gen.private_generators:
        assert not private.weight.any() and not private.bias.any()
    for factors in (*gen.left_factors, *gen.right_factors):
        for f in factors:  # Kaiming uniform: bound sqrt(6 / fan_in)
            fan_in = f.shape[1] * f.shape[2]
            assert 0 < f.abs().max() <= (6 / fan_in)**0.5


def test_shapes_and_formula_against_explicit_loop():
    gen = make()
    randomise(gen)
    B, N, G, r = 2, 4, 2, 3
    q = torch.randn(B, N, 16)
    for i, K in enumerate([1, 2, 3]):
        out = gen(q, i)
        assert [tuple(w.shape) for w in out] == [(B, N, G, 8, 8),
                                                 (B, N, G, 12, 6)]
        cores = gen.private_generators[i](q).view(B, N, 2, G, K, r, r)
        shared = gen.shared_matrices(q)
        for j in range(2):
            L = gen.left_factors[j][i].view(G, K, -1, r)
            R = gen.right_factors[j][i].view(G, K, r, -1)
            for b, n, g in [(0, 0, 0), (1, 3, 1), (0, 2, 1)]:
                expected = shared[j][b, n, g] + sum(
                    L[g, k] @ cores[b, n, j, g, k] @ R[g, k] for k in range(K))
                torch.testing.assert_close(out[j][b, n, g], expected)


def test_private_part_has_rank_at_most_K_r():
    gen = make().double()
    randomise(gen)
    q = torch.randn(1, 3, 16).double()
    for i, K in enumerate([1, 2, 3]):
        for delta in gen.private_matrices(q, i):
            ranks = torch.linalg.matrix_rank(delta.flatten(0, 2))
            assert int(ranks.max()) <= K * 3


def test_gradients_reach_shared_generator_from_every_layer():
    gen = make()
    randomise(gen)
    q = torch.randn(2, 3, 16)
    for i in range(3):
        gen.zero_grad()
        sum(w.square().sum() for w in gen(q, i)).backward()
        assert gen.shared_generator.weight.grad.abs().sum() > 0
        assert gen.private_generators[i].weight.grad.abs().sum() > 0


def test_split_matrices_layout_is_group_major():
    params = torch.arange(2 * (4 + 6), dtype=torch.float).view(1, 1, -1)
    M, S = split_matrices(params, [(2, 2), (2, 3)], num_groups=2)
    assert M[0, 0, 1].flatten().tolist() == [10., 11., 12., 13.]
    assert S[0, 0, 0].flatten().tolist() == [4., 5., 6., 7., 8., 9.]


def test_shared_only_and_private_only():
    shared_only = make(use_private=False)
    assert len(shared_only.private_generators) == 0
    q = torch.randn(1, 2, 16)
    assert torch.equal(shared_only(q, 2)[0], shared_only.shared_matrices(q)[0])
    private_only = make(use_shared=False)
    assert private_only.shared_generator is None
    # non-zero cores at init, else nothing could be learnt
    assert private_only.private_generators[0].weight.abs().sum() > 0


@pytest.mark.parametrize('kwargs, field', [
    (dict(rank=7), 'rank'),
    (dict(num_factors=[1, 2]), 'num_factors'),
    (dict(num_factors=[1, 0, 2]), 'num_factors'),
    (dict(num_groups=0), 'num_groups'),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make(**kwargs)


def test_low_rank_terms_are_the_papers_sum_term_by_term():
    """``low_rank_terms`` (the private part of forward and of the merge)
    against ``sum_k L_ijk Z_ijk R_ijk`` written out for every query, group
    and term, with the official layout of the cores (J, G*K, r, r)."""
    gen = make().double()
    randomise(gen)
    r = gen.rank
    cores = torch.randn(4, 2 * 2 * 3 * r * r, dtype=torch.double)
    out = gen.low_rank_terms(cores, 2)  # layer 2: K = 3
    Z = cores.view(4, 2, 2 * 3, r, r)
    for j, (m, n) in enumerate(SHAPES):
        assert out[j].shape == (4, 2, m, n)
        for q in range(4):
            for g in range(2):
                expected = sum(gen.left_factors[j][2][g * 3 + k] @ Z[
                    q, j, g * 3 + k] @ gen.right_factors[j][2][g * 3 + k]
                               for k in range(3))
                torch.testing.assert_close(out[j][q, g], expected)


@pytest.mark.parametrize(
    'kwargs',
    [dict(use_private='no'),
     dict(use_shared=0),
     dict(use_shared=None)])
def test_ablation_switches_must_be_bools(kwargs):
    field, = kwargs
    with pytest.raises(ValueError, match=f'{field} must be True or False'):
        make(**kwargs)


def test_frozen_shared_generator_gets_no_gradient_and_trains_the_rest():
    """Training only the private parts (shared generator frozen)."""
    gen = make().double()
    randomise(gen)
    gen.shared_generator.requires_grad_(False)
    q = torch.randn(2, 3, 16, dtype=torch.double, requires_grad=True)
    sum(w.square().sum() for w in gen(q, 1)).backward()
    assert gen.shared_generator.weight.grad is None
    assert gen.shared_generator.bias.grad is None
    assert gen.private_generators[1].weight.grad.abs().sum() > 0
    assert gen.left_factors[1][1].grad.abs().sum() > 0
    assert q.grad.abs().sum() > 0


def test_bfloat16_autocast_follows_autocast():
    """Under CPU autocast the generators and products run in bfloat16
    (autocast's choice, nothing cast by hand), close to float32."""
    gen = make()
    randomise(gen)
    q = torch.randn(2, 3, 16)
    ref = gen(q, 2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = gen(q, 2)
    for a, b in zip(out, ref):
        assert a.dtype == torch.bfloat16
        assert float((a.float() - b).norm() / b.norm()) < 0.05


@pytest.mark.parametrize(
    'kwargs', [{}, dict(use_shared=False),
               dict(use_private=False)])
def test_merge_gives_unmerged_matrices_and_unmerge_restores(kwargs):
    gen = make(**kwargs).double().eval()
    randomise(gen)
    q = torch.randn(2, 4, 16, dtype=torch.double)
    before = [gen(q, i) for i in range(3)]
    params = {n: p.clone() for n, p in gen.named_parameters()}
    gen.merge()
    assert gen.merged and gen.merged_weight.shape == (3, 2 * (64 + 72), 16)
    for i in range(3):
        for a, b in zip(gen(q, i), before[i]):
            torch.testing.assert_close(a, b)
    if gen.num_factors[0]:  # the private parts make the stages differ
        assert not torch.allclose(gen.merged_weight[0], gen.merged_weight[1])
    gen.unmerge()
    assert not gen.merged
    for n, p in gen.named_parameters():
        assert torch.equal(p, params[n])


def test_dense_state_dict_loads_into_the_unshared_generator():
    """A merged LORSA stack is an AdaMixer generator stack: same layout,
    same matrices."""
    gen = make().double()
    randomise(gen)
    dense = StackedGenerator(16, SHAPES, num_groups=2, num_layers=3).double()
    dense.load_state_dict(gen.dense_state_dict(), strict=True)
    q = torch.randn(1, 5, 16, dtype=torch.double)
    for i in range(3):
        for a, b in zip(dense(q, i), gen(q, i)):
            torch.testing.assert_close(a, b)


def test_merged_weights_follow_the_module_and_are_not_saved():
    gen = make().eval()
    randomise(gen)
    gen.merge()
    assert 'merged_weight' not in gen.state_dict()
    assert 'merged_bias' not in gen.state_dict()
    gen.double()  # buffers move with the module, as parameters do
    assert gen.merged_weight.dtype == gen.merged_bias.dtype == torch.double
    q = torch.randn(1, 2, 16, dtype=torch.double)
    assert gen(q, 0)[0].dtype == torch.double


def test_merge_rejects_non_finite_and_loading_unmerges():
    gen = make()
    randomise(gen)
    state = {k: v.clone() for k, v in gen.state_dict().items()}
    gen.merge()
    with pytest.raises(RuntimeError, match='unmerge'):
        gen(torch.randn(1, 2, 16), 0)  # training mode
    gen.load_state_dict(state)
    assert not gen.merged  # merged weights of old parameters are stale
    with torch.no_grad():
        gen.right_factors[0][1].fill_(float('inf'))
    with pytest.raises(ValueError, match='not finite'):
        gen.merge()


def test_defaults_are_the_papers_rank_and_one_factor():
    gen = LORSAGenerator(16, [(16, 16), (32, 16)], num_groups=2, num_layers=3)
    assert gen.rank == 16 and gen.num_factors == [1, 1, 1]
    assert gen.shared_generator is not None and len(gen.private_generators)
