"""The package's layers (docs/design.md): each uses only the ones below it.

``lors_det/lors`` (LORS) and ``lors_det/efficient`` (tied, LoRITa) are plain
PyTorch: they import nothing of mmdet, mmengine, mmcv or the rest of
``lors_det``; ``lors_det/models`` does not import the engine, the tools nor
the top-level package; no module imports another package's private names.
Every import is resolved to its absolute module name first, so relative
imports (``from ... import engine``) are judged like absolute ones.
"""
import ast
import os
import os.path as osp

import pytest

PKG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'lors_det')
FRAMEWORKS = ('mmdet', 'mmengine', 'mmcv')


def _module_name(path):
    rel = osp.splitext(osp.relpath(path, osp.dirname(PKG)))[0].split(os.sep)
    return rel[:-1] if rel[-1] == '__init__' else rel


def imports(path):
    """(absolute module, imported names) of every import in ``path``."""
    parts = _module_name(path)
    package = parts if path.endswith('__init__.py') else parts[:-1]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level == 0:
                yield node.module, names
                continue
            base = package[:len(package) - node.level + 1]
            module = '.'.join(base + ([node.module] if node.module else []))
            if node.module:
                yield module, names
            else:  # from .. import x: x may be a module
                yield from ((f'{module}.{n}', []) for n in names)


def _files(sub):
    root = osp.join(PKG, sub)
    return sorted(
        osp.join(d, f) for d, _, fs in os.walk(root) for f in fs
        if f.endswith('.py'))


def _ids(path):
    return osp.relpath(path, PKG)


#: package -> the lors_det packages it may import (besides itself)
ALLOWED = {
    # the dense baseline's linears may be LoRITa ones (make_linear)
    'lors': ('lors_det.efficient', ),
    'efficient': ('lors_det.lors.checks', ),
}


@pytest.mark.parametrize(
    'path', _files('lors') + _files('efficient'), ids=_ids)
def test_building_blocks_import_only_torch_and_each_other(path):
    own = 'lors_det.' + osp.relpath(path, PKG).split(os.sep)[0]
    allowed = (own, *ALLOWED[own.split('.')[1]])
    for module, _ in imports(path):
        assert module.split('.')[0] not in FRAMEWORKS, \
            f'{path} imports {module}'
        if module.split('.')[0] == 'lors_det':
            assert module.startswith(allowed), f'{path} imports {module}'


@pytest.mark.parametrize('path', _files('models'), ids=_ids)
def test_models_import_neither_the_engine_nor_the_top_package(path):
    for module, _ in imports(path):
        assert not module.startswith(('lors_det.engine', 'tools')), \
            f'{path} imports {module}'
        assert module != 'lors_det', f'{path} imports lors_det itself'


@pytest.mark.parametrize('path', _files(''), ids=_ids)
def test_no_private_names_across_packages(path):
    own = _module_name(path)[:2]
    for module, names in imports(path):
        if not module.startswith('lors_det.') or \
                module.split('.')[:2] == own:
            continue
        private = [
            n for n in names if n.startswith('_') and not n.endswith('__')
        ]
        assert not private, f'{path} imports private {private} of {module}'


def test_the_checks_see_relative_imports():
    """The resolver itself: a relative import out of models/ resolves to
    the engine, ``from .. import x`` to the module x."""
    path = osp.join(PKG, 'models', 'layers', 'ffn.py')
    found = dict(imports(path))
    assert 'lors_det.efficient' in found and 'lors_det.lors' in found
    path = osp.join(PKG, '__init__.py')
    assert 'lors_det.engine' in dict(imports(path))
