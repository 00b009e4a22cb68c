from .synthetic_coco import SYNTHETIC_CLASSES, make_synthetic_coco

__all__ = ['SYNTHETIC_CLASSES', 'make_synthetic_coco']
