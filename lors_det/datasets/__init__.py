from .checked_coco import CheckedCocoDataset  # noqa: F401 (registers it)
from .synthetic_coco import SYNTHETIC_CLASSES, make_synthetic_coco

__all__ = ['SYNTHETIC_CLASSES', 'make_synthetic_coco']
