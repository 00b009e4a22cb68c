import torch.nn as nn

from lors_det.lors import LORSAGenerator, LORSTLinear, count_parameters


def test_split_by_declared_names():
    model = nn.ModuleDict(
        dict(
            proj=LORSTLinear(10, 4, num_layers=2, rank=2),
            gen=LORSAGenerator(
                4, [(3, 3)],
                num_groups=1,
                num_layers=2,
                rank=2,
                num_factors=[1, 2]),
            head=nn.Linear(4, 2)))
    counts = count_parameters(model)
    shared = 4 * 10 + (4 * 9 + 9)
    private = (2 * 10 + 4 * 2 +
               4) * 2 + (4 + 1) * 4 * (1 + 2) + 2 * 3 * (1 + 2) * 2
    assert counts['shared'] == shared
    assert counts['private'] == private
    assert counts['other'] == 4 * 2 + 2
    assert counts['total'] == shared + private + 10
    model['head'].weight.requires_grad_(False)
    assert count_parameters(model)['trainable'] == counts['total'] - 8
