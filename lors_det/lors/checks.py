"""Config-value checks shared by the LORS building blocks, the mmdet
modules and the optimizer wrapper.

A check names the field, the value with its type and what was expected, so
a wrong config value fails at build time, not mid-training:
``ValueError`` for a value of the wrong type or range
(``query_generator.num_queries must be a positive integer, got 2.5
(float)``), ``TypeError`` for an unknown option name, as Python raises for
an unexpected keyword argument (``decoder.stage: unknown key 'num_haeds';
accepted: ...``). :func:`config_block` prefixes the errors raised while a
sub-config is built with the block's name.
"""
import math
import numbers
from contextlib import contextmanager
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union


def _got(value: Any) -> str:
    return f'{value!r} ({type(value).__name__})'


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive(name: str, value: int) -> int:
    """Return ``value`` if it is a positive int, else raise naming ``name``."""
    if not _is_int(value) or value <= 0:
        raise ValueError(f'{name} must be a positive integer, got '
                         f'{_got(value)}')
    return value


def check_divides(name: str, value: int, of_name: str, of: int) -> int:
    """Return ``value`` if it is a positive int that divides ``of``, else
    raise naming both (``num_groups=3 must divide feat_channels=64``)."""
    check_positive(name, value)
    if of % value:
        raise ValueError(f'{name}={value} must divide {of_name}={of}')
    return value


def check_non_negative(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 0, else raise naming ``name``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f'{name} must be a non-negative integer, got '
                         f'{_got(value)}')
    return value


def check_number(name: str, value: float, positive: bool = False) -> float:
    """Return ``value`` if it is a finite real number >= 0 (> 0 when
    ``positive``); bools and strings are refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        what = 'positive' if positive else 'non-negative'
        raise ValueError(f'{name} must be a {what} finite number, got '
                         f'{_got(value)}')
    return value


def check_bool(name: str, value: bool) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not ``'yes'``, not
    1)."""
    if not isinstance(value, bool):
        raise ValueError(f'{name} must be True or False, got {_got(value)}')
    return value


def check_keys(name: str, cfg: Optional[Mapping],
               accepted: Iterable[str]) -> Mapping:
    """Return ``cfg`` (``{}`` for None) if it is a dict whose keys are all
    in ``accepted``; else raise ``TypeError`` naming the unknown keys and
    listing the accepted ones.

    Example: ``check_keys('model.train_cfg', dict(asigner=...),
    ['assigner'])`` raises ``model.train_cfg: unknown key 'asigner';
    accepted: 'assigner'``.
    """
    if cfg is None:
        return {}
    accepted = list(accepted)
    if not isinstance(cfg, Mapping):
        raise TypeError(f'{name} must be a dict, got {_got(cfg)}')
    unknown = [k for k in cfg if k not in accepted]
    if unknown:
        raise TypeError(
            f'{name}: unknown key{"s" if len(unknown) > 1 else ""} '
            f'{", ".join(map(repr, unknown))}; accepted: '
            f'{", ".join(map(repr, accepted))}')
    return cfg


@contextmanager
def config_block(block: str):
    """Prefix ``TypeError`` and ``ValueError`` raised inside with the
    config block they come from (``decoder.stage: ...``)."""
    try:
        yield
    except (TypeError, ValueError) as e:
        raise type(e)(f'{block}: {e}') from None


def first_few(items: Iterable, k: int = 5, sep: str = ', ') -> str:
    """The first ``k`` of ``items`` and the count of the rest, for messages
    that would otherwise list hundreds of names: ``first_few(['a', 'b',
    'c'], 2)`` is ``'a, b, ... (1 more)'``."""
    items = [str(i) for i in items]
    more = f', ... ({len(items) - k} more)' if len(items) > k else ''
    return sep.join(items[:k]) + more


def per_layer(name: str, value: Union[int, Sequence[int]],
              num_layers: int) -> List[int]:
    """Expand an int to ``num_layers`` copies or check a per-layer list.

    Example: ``per_layer('num_factors', [1, 1, 2, 2, 3, 3], 6)``.
    """
    if _is_int(value):
        values = [value] * num_layers
    elif isinstance(value, (list, tuple)):
        values = list(value)
        if len(values) != num_layers:
            raise ValueError(
                f'{name} has {len(values)} entries {values} but there are '
                f'{num_layers} stacked layers (num_stages); give one value '
                f'per layer or a single int')
    else:
        raise TypeError(f'{name} must be an int or a list of {num_layers} '
                        f'ints (one per stacked layer), got {_got(value)}')
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
