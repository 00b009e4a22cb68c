"""lors_det: AdaMixer + LORS as an MMDetection 3.x plugin.

Importing the package registers its modules into mmdet's registries; configs
load it with ``custom_imports=dict(imports=['lors_det'],
allow_failed_imports=False)``. ``lors_det.lors`` is framework-free.
"""
from . import datasets, engine, models  # noqa: F401  (register modules)
from .version import __version__

__all__ = ['__version__']
