"""The package's layers (README, DESIGN): ``lors_det/lors`` is plain
PyTorch and imports nothing of mmdet, mmengine, mmcv or the rest of
``lors_det``; ``lors_det/models`` does not import the engine."""
import ast
import os
import os.path as osp

import pytest

PKG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
               'lors_det')


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ''


def _files(sub):
    root = osp.join(PKG, sub)
    return [osp.join(d, f) for d, _, fs in os.walk(root) for f in fs
            if f.endswith('.py')]


@pytest.mark.parametrize('path', _files('lors'), ids=osp.basename)
def test_lors_imports_only_torch_and_itself(path):
    for level, module in _imports(path):
        top = module.split('.')[0]
        assert level <= 1, f'{path}: relative import out of lors/: {module}'
        assert top not in ('mmdet', 'mmengine', 'mmcv', 'lors_det'), \
            f'{path} imports {module}'


@pytest.mark.parametrize('path', _files('models'), ids=osp.basename)
def test_models_do_not_import_the_engine_or_tools(path):
    depth = osp.relpath(path, PKG).count(os.sep)  # models/x.py -> 1
    for level, module in _imports(path):
        absolute = module if level == 0 else '.'.join(
            osp.relpath(osp.dirname(path), osp.dirname(PKG)).split(os.sep)
            [:depth + 1 - level + 1] + ([module] if module else []))
        assert not absolute.startswith(('lors_det.engine', 'lors_det.utils')),\
            f'{path} imports {absolute}'
