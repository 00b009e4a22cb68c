"""Training-reliability components registered into mmdet's registries.

* :class:`AtomicCheckpointHook` (``HOOKS``): checkpoints written atomically,
  outdated ones deleted only after a new one is saved.
* :class:`NonFiniteCheckOptimWrapper` (``OPTIM_WRAPPERS``): NaN/inf losses
  and gradients are reported (loss term, iteration) and the step is not
  applied; the run stops or skips the step.

See docs/reliability.md.
"""
from .hooks import AtomicCheckpointHook
from .optim_wrappers import NonFiniteCheckOptimWrapper, NonFiniteLossError

__all__ = [
    'AtomicCheckpointHook', 'NonFiniteCheckOptimWrapper', 'NonFiniteLossError'
]
