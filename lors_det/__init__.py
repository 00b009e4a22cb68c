"""lors_det: AdaMixer + LORS as an MMDetection 3.x plugin.

Importing the package registers its modules into mmdet's registries; configs
load it with ``custom_imports=dict(imports=['lors_det'],
allow_failed_imports=False)``; other projects inherit its configs as
``lors_det::lors/...`` once it is imported. ``lors_det.lors`` is
framework-free.
"""
from . import datasets, engine, models  # noqa: F401  (register modules)
from .engine.config_scope import register_config_scope
from .version import __version__

register_config_scope()  # `_base_ = 'lors_det::...'` (engine/config_scope)

__all__ = ['__version__']
