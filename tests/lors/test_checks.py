"""The config-value checks: accept what is valid (returning it), refuse the
rest naming the field and the value."""
import numpy as np
import pytest

from lors_det.lors.checks import (check_bool, check_keys, check_non_negative,
                                  check_number, check_positive, check_rank,
                                  config_block, first_few, per_layer)


def test_integer_checks():
    assert check_positive('k', 3) == 3
    assert check_positive('k', np.int64(1)) == 1
    assert check_non_negative('k', 0) == 0
    for bad in (0, -1, 2.0, True, '3', None):
        with pytest.raises(ValueError, match='k must be a positive integer'):
            check_positive('k', bad)
    for bad in (-1, 1.5, False):
        with pytest.raises(ValueError, match='k must be a non-negative'):
            check_non_negative('k', bad)


def test_number_and_bool_checks():
    assert check_number('w', 0) == 0 and check_number('w', 2.5) == 2.5
    assert check_number('lr', 1e-4, positive=True) == 1e-4
    for bad in (-0.1, float('nan'), float('inf'), True, '1'):
        with pytest.raises(ValueError, match='w must be a non-negative'):
            check_number('w', bad)
    with pytest.raises(ValueError, match='lr must be a positive'):
        check_number('lr', 0, positive=True)
    assert check_bool('tied', False) is False
    for bad in (1, 'yes', None):
        with pytest.raises(ValueError, match=r"tied must be True or False"):
            check_bool('tied', bad)


def test_check_keys():
    assert check_keys('cfg', None, ['a']) == {}
    assert check_keys('cfg', dict(a=1), ['a', 'b']) == dict(a=1)
    with pytest.raises(
            TypeError, match="cfg: unknown key 'c'; accepted: "
            "'a', 'b'"):
        check_keys('cfg', dict(a=1, c=2), ['a', 'b'])
    with pytest.raises(TypeError, match="unknown keys 'c', 'd'"):
        check_keys('cfg', dict(c=1, d=2), ['a'])
    with pytest.raises(TypeError, match='cfg must be a dict'):
        check_keys('cfg', [('a', 1)], ['a'])


def test_per_layer_and_rank():
    assert per_layer('K', 2, 3) == [2, 2, 2]
    assert per_layer('K', (1, 2, 3), 3) == [1, 2, 3]
    with pytest.raises(ValueError, match='K has 2 entries'):
        per_layer('K', [1, 2], 3)
    with pytest.raises(ValueError, match=r'K\[1\] must be a positive'):
        per_layer('K', [1, 0, 2], 3)
    with pytest.raises(
            TypeError,
            match=r'K must be an int or a list of 3 '
            r'ints .*got 1.5 \(float\)'):
        per_layer('K', 1.5, 3)
    assert check_rank('r', 4, 4, 9) == 4
    with pytest.raises(ValueError, match='r=5 is larger'):
        check_rank('r', 5, 4, 9)
    with pytest.raises(ValueError, match='r must be a positive'):
        check_rank('r', 0, 4, 9)


def test_config_block_prefixes_the_errors_raised_inside():
    with pytest.raises(ValueError, match=r'^decoder.stage: k must be'):
        with config_block('decoder.stage'):
            check_positive('k', 0)
    with pytest.raises(TypeError, match=r'^mixing: cfg: unknown key'):
        with config_block('mixing'):
            check_keys('cfg', dict(x=1), [])
    with pytest.raises(KeyError):  # other errors pass through unchanged
        with config_block('mixing'):
            raise KeyError('x')


def test_first_few_names_some_and_counts_the_rest():
    assert first_few([]) == ''
    assert first_few(['a', 'b'], 2) == 'a, b'
    assert first_few(['a', 'b', 'c'], 2) == 'a, b, ... (1 more)'
    assert first_few(range(7), 3, sep='; ') == '0; 1; 2, ... (4 more)'
