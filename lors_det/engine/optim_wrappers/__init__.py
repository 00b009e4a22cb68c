from .non_finite_check_optim_wrapper import (CheckedOptimWrapperConstructor,
                                             NonFiniteCheck,
                                             NonFiniteCheckAmpOptimWrapper,
                                             NonFiniteCheckOptimWrapper,
                                             NonFiniteLossError, to_amp)

__all__ = [
    'CheckedOptimWrapperConstructor', 'NonFiniteCheck',
    'NonFiniteCheckAmpOptimWrapper', 'NonFiniteCheckOptimWrapper',
    'NonFiniteLossError', 'to_amp'
]
