"""Parameter-free views of one layer of a shared stack.

:class:`~.share.SharedLayers` puts a view where a layer's ``nn.Linear`` was;
the layer calls it like the linear, and the view calls its stack with its
layer index. The stack is a plain attribute of the view, not a submodule:
it is registered once, in ``SharedLayers`` (registered in every view, the
state dict would hold the shared weight N times and ``.modules()`` would
visit it N times). ``copy.deepcopy`` of the model keeps the links, since the
stack and the views are copied in one pass.
"""
import torch
import torch.nn as nn

from .lorsa import LORSAGenerator
from .lorst import LORSTLinear


def _hold(module: nn.Module, name: str, value) -> None:
    # a plain attribute, not a submodule (see the module docstring)
    object.__setattr__(module, name, value)


class LORSTView(nn.Module):
    """Layer ``layer`` of a shared :class:`~.lorst.LORSTLinear`, in place of
    an ``nn.Linear``: (..., in) -> (..., out). No parameters of its own."""

    def __init__(self, stack: LORSTLinear, layer: int):
        super().__init__()
        _hold(self, 'stack', stack)
        self.layer = layer
        self.in_features = stack.in_features
        self.out_features = stack.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x, self.layer)

    def extra_repr(self) -> str:
        return (f'layer={self.layer} of a shared LORSTLinear, '
                f'in={self.in_features}, out={self.out_features}')


class LORSAView(nn.Module):
    """Layer ``layer`` of a shared :class:`~.lorsa.LORSAGenerator`, in place
    of the ``nn.Linear`` that generated the matrices: (..., C) ->
    (..., G * sum_j m_j n_j), laid out as that linear's output (per group,
    the row-major matrices one after the other). No parameters of its own.
    """

    def __init__(self, stack: LORSAGenerator, layer: int):
        super().__init__()
        _hold(self, 'stack', stack)
        self.layer = layer
        self.in_features = stack.query_dim
        self.out_features = stack.num_groups * sum(
            m * n for m, n in stack.matrix_shapes)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        flat = query.reshape(1, -1, self.in_features)  # (1, M, C)
        if self.stack.merged:
            out = self.stack.merged_linear(flat, self.layer)
        else:
            mats = self.stack(flat, self.layer)  # [(1, M, G, m_j, n_j)]
            out = torch.cat([m.flatten(3) for m in mats], dim=3)
        return out.reshape(*query.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f'layer={self.layer} of a shared LORSAGenerator, '
                f'shapes={self.stack.matrix_shapes}, '
                f'groups={self.stack.num_groups}')
