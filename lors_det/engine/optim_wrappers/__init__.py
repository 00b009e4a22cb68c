from .non_finite_check_optim_wrapper import (CheckedOptimWrapperConstructor,
                                             NonFiniteCheckOptimWrapper,
                                             NonFiniteLossError)

__all__ = [
    'CheckedOptimWrapperConstructor', 'NonFiniteCheckOptimWrapper',
    'NonFiniteLossError'
]
