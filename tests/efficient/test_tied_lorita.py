import pytest
import torch
from helpers import assert_xavier_uniform

from lors_det.efficient import LoRITaLinear, rank_for_energy, svd_truncate
from lors_det.models.layers import FFN


def test_tied_ffn_halves_weights_and_grad_flows_from_both_uses():
    plain, tied = FFN(16, 64), FFN(16, 64, tied=True)

    def weights(m):
        return sum(p.numel() for n, p in m.named_parameters()
                   if n.endswith('weight'))

    assert weights(tied) * 2 == weights(plain)
    # init: Xavier W (same scale as the untied FFN's), zero biases
    assert_xavier_uniform(tied.tied.weight)
    assert not tied.tied.bias1.any() and not tied.tied.bias2.any()
    with torch.no_grad():  # non-zero biases, so the formula checks them
        tied.tied.bias1.normal_()
        tied.tied.bias2.normal_()
    x = torch.randn(3, 16)
    W = tied.tied.weight
    up = torch.autograd.grad(torch.relu(x @ W.t() + tied.tied.bias1).sum(),
                             W)[0]
    full = torch.autograd.grad(tied(x).sum(), W)[0]
    # the gradient is the sum of both uses, so it differs from either alone
    assert up.abs().sum() > 0 and not torch.allclose(full, up)
    expected = x + torch.relu(x @ W.t() + tied.tied.bias1) @ W + \
        tied.tied.bias2
    torch.testing.assert_close(tied(x), expected)


def test_lorita_fold_is_exact_and_compress_full_rank_is_exact():
    layer = LoRITaLinear(12, 8, num_factors=3)
    assert [tuple(w.shape) for w in layer.factors] == [(8, 12), (8, 8), (8, 8)]
    x = torch.randn(5, 12)
    y = layer(x)
    torch.testing.assert_close(y, x @ layer.fold().t() + layer.bias)
    layer.compress(rank=8)
    torch.testing.assert_close(layer(x), y, rtol=1e-5, atol=1e-5)


def test_lorita_truncation_reduces_params_and_error_matches_svd():
    layer = LoRITaLinear(20, 10, num_factors=2)
    W = layer.fold().detach()
    layer.compress(rank=3)
    assert sum(p.numel() for p in layer.factors) == 3 * (20 + 10)
    s = torch.linalg.svdvals(W.double())
    err = torch.linalg.matrix_norm((layer.fold() - W).double())
    torch.testing.assert_close(err, s[3:].square().sum().sqrt())


def test_compressed_checkpoint_loads_into_uncompressed_module():
    src = LoRITaLinear(20, 10, num_factors=3)
    src.compress(rank=4)
    dst = LoRITaLinear(20, 10, num_factors=3)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 20)
    torch.testing.assert_close(dst(x), src(x))


def test_rank_for_energy_and_errors():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert rank_for_energy(s, 1.0) == 3
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.7) == 2
    # no zero singular value: the total is the last cumulative sum
    assert rank_for_energy(torch.tensor([2.0, 1.0]), 0.9) == 2
    for energy in (0, 1.5):
        with pytest.raises(ValueError, match='energy'):
            rank_for_energy(s, energy)
    with pytest.raises(ValueError, match='rank'):
        svd_truncate(torch.randn(4, 3), 4)
    with pytest.raises(ValueError, match='tied=True or lorita'):
        FFN(8, 16, tied=True, lorita=dict(num_factors=2))


@pytest.mark.parametrize('shape', [(512, 64), (64, 512)])
def test_lorita_product_starts_with_xavier_variance(shape):
    torch.manual_seed(0)
    fan_in, fan_out = shape
    layer = LoRITaLinear(fan_in, fan_out, num_factors=3)
    var = layer.fold().detach().var().item()
    xavier = 2.0 / (fan_in + fan_out)
    assert abs(var / xavier - 1) < 0.1


def test_lorita_bias_init_and_factor_chain_checks():
    torch.manual_seed(0)
    layer = LoRITaLinear(16, 8, num_factors=2)
    bound = 1 / 16**0.5  # nn.Linear's default bias init
    assert layer.bias.abs().max() <= bound
    assert layer.bias.std() > bound / 4
    assert layer.is_valid_chain([(8, 16)])  # one dense factor
    assert layer.is_valid_chain([(3, 16), (8, 3)])
    assert not layer.is_valid_chain([(3, 16), (8, 5)])  # inner sizes differ
    assert not layer.is_valid_chain([(3, 12), (8, 3)])  # wrong input size
    assert not layer.is_valid_chain([(3, 16), (7, 3)])  # wrong output size
    assert not layer.is_valid_chain([])


def test_load_adopts_only_factors_numbered_from_zero_without_gaps():
    layer = LoRITaLinear(16, 8, num_factors=3)
    state = {
        'factors.0': torch.zeros(3, 16),
        'factors.1': torch.zeros(8, 3),
        'bias': torch.zeros(8)
    }
    layer.load_state_dict(state)  # a compressed chain: adopted
    assert [tuple(f.shape) for f in layer.factors] == [(3, 16), (8, 3)]
    layer = LoRITaLinear(16, 8, num_factors=3)
    gap = {
        'factors.0': torch.zeros(3, 16),
        'factors.2': torch.zeros(8, 3),
        'bias': torch.zeros(8)
    }
    with pytest.raises(RuntimeError, match='Missing key.*factors.1'):
        layer.load_state_dict(gap)  # the usual error, not a KeyError
    assert len(layer.factors) == 3


def test_entries_after_load_describe_the_compressed_layer():
    """What a checkpoint check expects of a layer that will adopt a
    compressed chain: the chain's factor shapes and the bias."""
    layer = LoRITaLinear(16, 8, num_factors=3)
    state = {
        'l.factors.0': torch.zeros(3, 16),
        'l.factors.1': torch.zeros(8, 3),
        'l.bias': torch.zeros(8)
    }
    f32 = torch.float32
    assert layer.state_entries_after_load(state, 'l.') == {
        'l.factors.0': ((3, 16), f32),
        'l.factors.1': ((8, 3), f32),
        'l.bias': ((8, ), f32)
    }
    assert layer.state_entries_after_load({}, 'l.') is None


def test_plain_ffn_is_a_residual_two_layer_mlp_and_tied_must_be_bool():
    ffn = FFN(8, 16)
    x = torch.randn(3, 8)
    ref = x + ffn.fc2(torch.relu(ffn.fc1(x)))
    torch.testing.assert_close(ffn(x), ref)
    with pytest.raises(ValueError, match='tied'):
        FFN(8, 16, tied='yes')
