from .non_finite_check_optim_wrapper import (NonFiniteCheckOptimWrapper,
                                             NonFiniteLossError)

__all__ = ['NonFiniteCheckOptimWrapper', 'NonFiniteLossError']
