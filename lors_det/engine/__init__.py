"""Training and checkpoint I/O around the model (mmengine/mmdet side).

* :mod:`.checkpoint`: the one checkpoint reader (restricted unpickler) and
  the one checkpoint-vs-model comparison;
* :mod:`.fileio`: atomic writes, output paths that never replace an input,
  the work_dir lock;
* :mod:`.resume`: which checkpoint a run resumes from;
* :mod:`.dist`: CPU multi-process (gloo) set-up for the tools;
* :class:`AtomicCheckpointHook` (``HOOKS``): checkpoints written atomically,
  outdated ones deleted only after a new one is saved;
* :class:`NonFiniteCheckOptimWrapper` (``OPTIM_WRAPPERS``): NaN/inf losses
  and gradients are reported (loss term, iteration) and the step is not
  applied; the run stops or skips the step.

Importing it makes mmengine read local checkpoints with
:func:`.checkpoint.load_checkpoint_file` and registers the
``'atomic_local'`` file backend. See docs/reliability.md.
"""
from .checkpoint import register_checkpoint_loader
from .fileio import register_atomic_backend
from .hooks import AtomicCheckpointHook
from .optim_wrappers import NonFiniteCheckOptimWrapper, NonFiniteLossError

register_checkpoint_loader()
register_atomic_backend()

__all__ = [
    'AtomicCheckpointHook', 'NonFiniteCheckOptimWrapper', 'NonFiniteLossError'
]
