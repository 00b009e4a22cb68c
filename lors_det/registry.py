"""The ``lors_det`` registry scope, for configs that inherit ``lors_det::``.

mmengine tags every top-level dict of a ``pkg::`` base with ``_scope_=pkg``
(``model``, ``optim_wrapper``, the dataloaders, hooks, ...). Building such a
dict switches to that scope: mmengine imports ``lors_det.registry`` and
looks up the registry of scope ``lors_det`` in the registry tree; without
one it falls back to mmengine's root registry, which knows neither mmdet's
nor this package's modules (``KeyError: 'AdaMixer is not in the
mmengine::model registry'``).

The registries below are that scope: one child of each of mmdet's
registries. This package registers its modules into mmdet's registries
(``from mmdet.registry import MODELS``), and a child finds whatever its
parent (mmdet) or grandparent (mmengine) holds, so nothing is registered
twice.
"""
from mmdet import registry as mmdet
from mmengine.registry import Registry

SCOPE = 'lors_det'


def _child(parent: Registry) -> Registry:
    # import this package (its modules) and the parent's modules on first
    # use, as mmdet's registries import theirs; ``_locations`` is where
    # mmengine keeps a registry's import locations
    return Registry(
        parent.name,
        parent=parent,
        scope=SCOPE,
        locations=['lors_det', *parent._locations])


RUNNERS = _child(mmdet.RUNNERS)
RUNNER_CONSTRUCTORS = _child(mmdet.RUNNER_CONSTRUCTORS)
LOOPS = _child(mmdet.LOOPS)
HOOKS = _child(mmdet.HOOKS)
DATASETS = _child(mmdet.DATASETS)
DATA_SAMPLERS = _child(mmdet.DATA_SAMPLERS)
TRANSFORMS = _child(mmdet.TRANSFORMS)
MODELS = _child(mmdet.MODELS)
MODEL_WRAPPERS = _child(mmdet.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(mmdet.WEIGHT_INITIALIZERS)
OPTIMIZERS = _child(mmdet.OPTIMIZERS)
OPTIM_WRAPPERS = _child(mmdet.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(mmdet.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(mmdet.PARAM_SCHEDULERS)
METRICS = _child(mmdet.METRICS)
EVALUATOR = _child(mmdet.EVALUATOR)
TASK_UTILS = _child(mmdet.TASK_UTILS)
VISUALIZERS = _child(mmdet.VISUALIZERS)
VISBACKENDS = _child(mmdet.VISBACKENDS)
LOG_PROCESSORS = _child(mmdet.LOG_PROCESSORS)
