from .initial_query_generator import InitialQueryGenerator

__all__ = ['InitialQueryGenerator']
