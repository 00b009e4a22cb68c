"""SharedLayers: LORS over any stack of identical layers (plain PyTorch)."""
import copy

import pytest
import torch
import torch.nn as nn

from lors_det.lors import (LORSAGenerator, LORSTLinear, SharedLayers,
                           count_parameters, share_layers)
from lors_det.lors.views import LORSAView, LORSTView

C, M, HIDDEN, N = 12, 4, 20, 3  # width, matrix side, FFN width, layers


class Block(nn.Module):
    """A layer with static linears (fc1, fc2) and a query-generated pair of
    matrices (gen: C -> (C, M) and (M, C)), like Sparse R-CNN's DIIHead."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(C, HIDDEN), nn.Linear(HIDDEN, C)
        self.gen = nn.Linear(C, 2 * C * M)
        self.norm = nn.LayerNorm(C)

    def forward(self, q, feats):  # q (Q, C), feats (Q, P, C)
        params = self.gen(q)
        w_in = params[:, :C * M].view(-1, C, M)
        w_out = params[:, C * M:].view(-1, M, C)
        mixed = torch.bmm(torch.bmm(feats, w_in).relu(), w_out).mean(1)
        return self.norm(q + self.fc2(self.fc1(q + mixed).relu()))


LORST = dict(targets=['fc*'], rank=2, num_factors=[1, 2, 1])
LORSA = dict(
    targets='gen',
    matrix_shapes=[(C, M), (M, C)],
    rank=2,
    num_factors=[1, 2, 3])


def run(layers, q, feats):
    for layer in layers:
        q = layer(q, feats)
    return q


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(5, C, generator=g, dtype=torch.float64),
            torch.randn(5, 7, C, generator=g, dtype=torch.float64))


def stack(identical=False):
    torch.manual_seed(0)
    first = Block()
    return nn.ModuleList(
        copy.deepcopy(first) if identical else Block()
        for _ in range(N)).double()


def randomise_private(shared):
    with torch.no_grad():
        for name, p in shared.named_parameters():
            if 'private' in name or 'factors' in name:
                p.normal_(std=0.3)


def test_shared_stack_computes_the_original_when_layers_start_equal():
    """Shared weight = one layer's weights, private parts zero: the stack of
    identical layers computes exactly what it computed before sharing."""
    layers = stack(identical=True)
    q, feats = inputs()
    before = run(layers, q, feats)
    shared = SharedLayers(layers, lorst=LORST, lorsa=LORSA)
    assert isinstance(layers[1].fc2, LORSTView)
    assert isinstance(layers[2].gen, LORSAView)
    torch.testing.assert_close(
        run(layers, q, feats), before, rtol=1e-12, atol=1e-12)
    assert set(shared.targets) == {'fc1', 'fc2', 'gen'}


@pytest.mark.parametrize('init_from', [0, 2])
def test_init_shares_layer_init_from_with_each_layer_bias(init_from):
    layers = stack()
    dense = copy.deepcopy(layers)
    shared = SharedLayers(
        layers, lorst=LORST, lorsa=LORSA, init_from=init_from)
    for name, stack_ in shared.targets.items():
        for i in range(N):
            weight, bias = stack_.dense_layer(i)
            src = dense[init_from].get_submodule(name)
            assert torch.equal(weight, src.weight)
            # LORST keeps each layer's bias; LORSA has one shared bias
            own = dense[i] if isinstance(stack_, LORSTLinear) else \
                dense[init_from]
            assert torch.equal(bias, own.get_submodule(name).bias)


def test_merged_unmerged_and_unshared_agree_with_nonzero_private_parts():
    layers = stack()
    owner = nn.Module()
    owner.layers = layers
    owner.lors = SharedLayers(layers, lorst=LORST, lorsa=LORSA)
    randomise_private(owner.lors)
    owner.eval()
    q, feats = inputs(1)
    unmerged = run(layers, q, feats)
    # the private parts are real: layers differ, the output moves
    ws = [owner.lors.lorst['fc1'].dense_layer(i)[0] for i in range(N)]
    assert not torch.allclose(ws[0], ws[1])
    owner.lors.merge()
    assert all(s.merged for s in owner.lors.targets.values())
    torch.testing.assert_close(run(layers, q, feats), unmerged)
    owner.lors.unmerge()
    torch.testing.assert_close(run(layers, q, feats), unmerged)
    owner.lors.unshare()
    assert type(layers[1].gen) is nn.Linear
    torch.testing.assert_close(run(layers, q, feats), unmerged)


def test_gradients_reach_shared_and_every_private_part():
    layers = stack()
    shared = SharedLayers(layers, lorst=LORST, lorsa=LORSA)
    randomise_private(shared)  # B and the cores non-zero: all get gradients
    q, feats = inputs(2)
    run(layers, q, feats).square().sum().backward()
    for name, p in shared.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameters_live_once_in_the_owner():
    layers = stack()
    # fc1, fc2 and gen of every layer, weights and biases
    dense_numel = N * (2 * C * HIDDEN + HIDDEN + C + (C + 1) * 2 * C * M)
    owner = nn.Module()
    owner.layers = layers
    owner.lors = SharedLayers(layers, lorst=LORST, lorsa=LORSA)
    assert owner.lors.dense_numel == dense_numel
    # views hold no parameters and are not parents of the stacks
    assert all('.fc' not in n and '.gen' not in n for n in owner.state_dict()
               if n.startswith('layers.'))
    counts = count_parameters(owner)
    # closed forms: LORST shared W (out x in) and per layer K*r*(in+out)+out;
    # LORSA shared Linear(C, 2CM) and per layer Linear(C, 2 K r^2) + factors
    lorst_shared = C * HIDDEN * 2
    lorst_private = sum(k * 2 * (C + HIDDEN) + HIDDEN + k * 2 * (HIDDEN + C) +
                        C for k in LORST['num_factors'])
    lorsa_shared = C * 2 * C * M + 2 * C * M
    lorsa_private = sum((C + 1) * 2 * k * 4 + k * 2 * (C + M) * 2
                        for k in LORSA['num_factors'])
    assert counts['shared'] == lorst_shared + lorsa_shared
    assert counts['private'] == lorst_private + lorsa_private
    assert counts['other'] == N * 2 * C  # the LayerNorms
    assert len(owner.state_dict()) == len(dict(owner.named_parameters()))


def test_share_layers_registers_the_stacks_in_their_owner():
    owner = nn.Module()
    owner.layers = stack()
    before = count_parameters(owner)['total']
    shared = share_layers(owner.layers, lorst=LORST, owner=owner)
    assert owner.lors is shared
    counts = count_parameters(owner)
    assert counts['total'] == before - shared.dense_numel + sum(
        p.numel() for p in shared.parameters())
    assert counts['shared'] == C * HIDDEN * 2


def test_unshare_reshare_keeps_parameter_objects_for_an_optimizer():
    layers = stack()
    shared = SharedLayers(layers, lorst=LORST, lorsa=LORSA)
    ids = [id(p) for p in shared.parameters()]
    shared.unshare()
    assert not shared.is_shared
    with torch.no_grad():  # what a framework's init would do
        for layer in layers:
            layer.fc1.bias.fill_(0.5)
    shared.reshare()
    assert shared.is_shared and ids == [id(p) for p in shared.parameters()]
    # the unshared count is recounted, not added to
    assert shared.dense_numel == N * (2 * C * HIDDEN + HIDDEN + C +
                                      (C + 1) * 2 * C * M)
    assert all(
        torch.equal(b, torch.full_like(b, 0.5))
        for b in shared.lorst['fc1'].private_bias)
    assert all(B.abs().sum() == 0 for B in shared.lorst['fc2'].private_B)
    with pytest.raises(RuntimeError, match='already hold the views'):
        shared.reshare()


@pytest.mark.parametrize('num_groups', [1, 2])
def test_views_have_the_replaced_linears_sizes(num_groups):
    layers = stack()
    sizes = {
        name: (m.in_features, m.out_features)
        for name, m in layers[0].named_children() if isinstance(m, nn.Linear)
    }
    # G groups of 1/G-height matrices fill the same generator output
    shapes = [(C // num_groups, M), (M // num_groups, C)]
    lorsa = dict(LORSA, matrix_shapes=shapes, num_groups=num_groups)
    SharedLayers(layers, lorst=LORST, lorsa=lorsa)
    for layer in layers:
        for name, (in_features, out_features) in sizes.items():
            view = getattr(layer, name)
            assert isinstance(view, (LORSTView, LORSAView))
            assert (view.in_features, view.out_features) == \
                (in_features, out_features), name


def test_deepcopy_links_views_to_the_copied_stacks():
    owner = nn.Module()
    owner.layers = stack()
    owner.lors = SharedLayers(owner.layers, lorst=LORST, lorsa=LORSA)
    twin = copy.deepcopy(owner)  # what an EMA hook does
    assert twin.layers[1].fc1.stack is twin.lors.lorst['fc1']
    assert twin.layers[0].gen.stack is twin.lors.lorsa['gen']
    assert twin.lors.layers is twin.layers


def test_switches_and_per_layer_factors_reach_the_stacks():
    layers = stack()
    shared = SharedLayers(
        layers,
        lorst=dict(targets=['fc1'], rank=3, use_private=False),
        lorsa=dict(LORSA, use_shared=False))
    assert isinstance(shared.lorsa['gen'], LORSAGenerator)
    assert shared.lorsa['gen'].shared_generator is None
    assert shared.lorsa['gen'].num_factors == [1, 2, 3]
    assert shared.lorst['fc1'].private_A[0].shape == (0, C)
    assert type(layers[0].fc2) is nn.Linear  # not targeted


class WithAttention(nn.Module):

    def __init__(self, bias=True):
        super().__init__()
        self.attn = nn.MultiheadAttention(C, 2)
        self.fc = nn.Linear(C, C, bias=bias)


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(lorst=dict(targets=['ffn.*'])), ValueError,
     r"lorst.targets: 'ffn.\*' matches no nn.Linear of the layer; its "
     r'linear layers are: fc1, fc2, gen'),
    (dict(lorst=dict(targets=[])), ValueError,
     'lorst.targets must be a non-empty list'),
    (dict(lorst=dict(targets=['fc1', ''])), ValueError,
     'lorst.targets must be a non-empty list of glob patterns'),
    (dict(lorst=dict(targets=['fc1', 3])), ValueError,
     'lorst.targets must be a non-empty list of glob patterns'),
    (dict(lorst=dict(targets=['fc1'], rnak=2)), TypeError,
     "lorst: unknown key 'rnak'"),
    (dict(lorst=dict(targets=['fc1'], rank=13)), ValueError,
     r'lorst \(fc1\): rank=13 is larger than the matrix'),
    (dict(lorst=dict(targets=['fc1'], num_factors=[1, 1])), ValueError,
     r'lorst \(fc1\): num_factors has 2 entries'),
    (dict(lorsa=dict(targets=['gen'], matrix_shapes=[(C, M)])), ValueError,
     r'lorsa \(gen\): num_groups x sum .* = 48, but the linear generates '
     '96'),
    (dict(lorsa=dict(targets=['gen'], matrix_shapes=None)), ValueError,
     'matrix_shapes must be a list of'),
    (dict(lorst=dict(targets=['*']), lorsa=dict(LORSA)), ValueError,
     r"\['gen'\] matched by both lorst.targets and lorsa.targets"),
    (dict(lorst=dict(targets=['fc1']),
          init_from=3), ValueError, 'init_from=3 is not a layer index'),
    (dict(), ValueError, 'needs lorst or lorsa'),
])
def test_arguments_are_checked_naming_the_field(kwargs, error, message):
    with pytest.raises(error, match=message):
        SharedLayers(stack(), **kwargs)


def test_layers_must_be_alike_and_own_their_linears():
    layers = stack()
    layers[2].fc1 = nn.Linear(C, HIDDEN + 1)
    with pytest.raises(ValueError, match=r"'fc1' is \(21, 12\) in layer 2"):
        SharedLayers(layers, lorst=dict(targets=['fc1']))
    layers = stack()
    layers[1].fc2 = layers[0].fc2
    with pytest.raises(ValueError, match='same module as in an earlier'):
        SharedLayers(layers, lorst=dict(targets=['fc2']))
    layers = stack()
    del layers[1].gen
    with pytest.raises(ValueError, match="layer 1 has no nn.Linear 'gen'"):
        SharedLayers(layers, lorsa=dict(LORSA))
    with pytest.raises(ValueError, match='non-empty nn.ModuleList'):
        SharedLayers([Block()], lorst=dict(targets=['fc1']))


def test_attention_out_proj_and_bias_free_linears_are_refused():
    layers = nn.ModuleList([WithAttention(), WithAttention()])
    with pytest.raises(ValueError, match='out_proj of an nn.Multihead'):
        SharedLayers(layers, lorst=dict(targets=['attn.*']))
    layers = nn.ModuleList([WithAttention(False), WithAttention(False)])
    with pytest.raises(ValueError, match="'fc' has no bias"):
        SharedLayers(layers, lorst=dict(targets=['fc']))
