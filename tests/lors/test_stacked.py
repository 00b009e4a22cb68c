"""The unshared stacks (AdaMixer's baseline) keep AdaMixer's init."""
import pytest
import torch
import torch.nn as nn
from helpers import assert_xavier_uniform

from lors_det.efficient import LoRITaLinear
from lors_det.lors import StackedGenerator, StackedLinear, make_linear

SHAPES = [(8, 8), (12, 6)]


def test_stacked_linear_layers_are_independent_xavier_linears():
    torch.manual_seed(0)
    stack = StackedLinear(48, 16, num_layers=3)
    assert all(type(layer) is nn.Linear for layer in stack.layers)
    for layer in stack.layers:
        assert_xavier_uniform(layer.weight)
    assert not torch.equal(stack.layers[0].weight, stack.layers[1].weight)
    x = torch.randn(2, 5, 48)
    torch.testing.assert_close(stack(x, 2), stack.layers[2](x))
    assert type(make_linear(8, 4, dict(num_factors=2))) is LoRITaLinear


def test_stacked_generator_starts_with_zero_weight_and_default_bias():
    torch.manual_seed(0)
    gen = StackedGenerator(16, SHAPES, num_groups=2, num_layers=3)
    for layer in gen.layers:
        assert layer.weight.shape == (2 * (64 + 72), 16)
        assert torch.count_nonzero(layer.weight) == 0
        # nn.Linear's default bias: U(-1/sqrt(C), 1/sqrt(C)), not zero
        assert 0 < layer.bias.abs().max() <= 1 / 16**0.5
    q = torch.randn(2, 5, 16)
    M, S = gen(q, 1)
    assert M.shape == (2, 5, 2, 8, 8) and S.shape == (2, 5, 2, 12, 6)
    # zero weight: every query gets the same (bias) matrices
    torch.testing.assert_close(M[0, 0], M[1, 4])


def test_bad_layer_counts_name_the_field():
    with pytest.raises(ValueError, match='num_layers'):
        StackedLinear(8, 4, num_layers=0)
    with pytest.raises(ValueError, match='num_layers'):
        StackedGenerator(8, SHAPES, num_groups=2, num_layers=0)
