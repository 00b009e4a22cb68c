"""Argument checks shared by the LORS building blocks.

Every check raises ``ValueError`` naming the field, its value and what was
expected, so a wrong config value fails at build time, not mid-training.
"""
from typing import List, Sequence, Union


def check_positive(name: str, value: int) -> int:
    """Return ``value`` if it is a positive int, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return value


def per_layer(name: str, value: Union[int, Sequence[int]],
              num_layers: int) -> List[int]:
    """Expand an int to ``num_layers`` copies or check a per-layer list.

    Example: ``per_layer('num_factors', [1, 1, 2, 2, 3, 3], 6)``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        values = [value] * num_layers
    else:
        values = list(value)
        if len(values) != num_layers:
            raise ValueError(
                f'{name} has {len(values)} entries {values} but there are '
                f'{num_layers} stacked layers (num_stages); give one value '
                f'per layer or a single int')
    for i, v in enumerate(values):
        check_positive(f'{name}[{i}]', v)
    return values


def check_rank(name: str, rank: int, *dims: int) -> int:
    """A low-rank factor must have ``0 < rank <= min(dims)``."""
    check_positive(name, rank)
    if rank > min(dims):
        raise ValueError(
            f'{name}={rank} is larger than the matrix it factorises '
            f'({" x ".join(map(str, dims))}); expected {name} <= {min(dims)}')
    return rank
