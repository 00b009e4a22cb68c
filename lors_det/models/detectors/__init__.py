from .adamixer import AdaMixer

__all__ = ['AdaMixer']
