"""Make ``lors_det::`` usable in config bases from another project::

    _base_ = 'lors_det::lors/adamixer-lors_r50_8xb2-1x_coco.py'

mmengine resolves ``pkg::path`` (``mmengine.config.utils
._get_package_and_cfg_path``) only for module names in its
``MODULE2PACKAGE`` table (the OpenMMLab packages), then reads
``<installed package>/.mim/configs/path``. The package ships
``lors_det/.mim/configs`` (a link to the repository's ``configs/``) and
``.mim/model-index.yml`` (read by ``mim search lors_det``), so the one thing
to add is the table entry, done on ``import lors_det``. The table is read
while a config file is parsed, so import ``lors_det`` before
``Config.fromfile`` (this project's tools do; ``custom_imports`` comes too
late for ``_base_``).

The tools take such names as their CONFIG argument too
(:func:`resolve_config_path`, :func:`load_tool_config`: ``lors_det::...``,
``mmdet::...``, or a path), and report a config that cannot be loaded or
built in one line (:func:`config_errors`: ``error: CONFIG: ...``; set
``LORS_DET_TRACEBACK=1`` for the traceback).
"""
import contextlib
import importlib.util
import os
import os.path as osp
import sys
from typing import Optional

from .checkpoint import NO_WEIGHTS, NoPublishedWeightsError

__all__ = [
    'register_config_scope', 'resolve_config_path', 'load_tool_config',
    'config_errors', 'ConfigError', 'NO_WEIGHTS', 'NoPublishedWeightsError'
]


class ConfigError(ValueError):
    """A config that cannot be found, read or built."""


def register_config_scope() -> None:
    """Add ``lors_det`` to mmengine's module -> package table. Idempotent.

    (The metafiles' no-weights marker, :data:`NO_WEIGHTS`, is a checkpoint
    scheme: :func:`.checkpoint.register_checkpoint_loader` registers it.)"""
    from mmengine.config import utils

    utils.MODULE2PACKAGE.setdefault('lors_det', 'lors_det')


def resolve_config_path(config: str) -> str:
    """``config`` itself, or for ``scope::rel/path.py`` the file in the
    installed package's ``.mim/configs`` (what mmengine reads for
    ``_base_``).

    Raises:
        ConfigError: the file does not exist (naming where it looked).
    """
    if '::' not in config:
        if not osp.isfile(config):
            raise ConfigError(f'config file does not exist: {config}')
        return config
    register_config_scope()
    from mmengine.config.utils import MODULE2PACKAGE
    scope, rel = config.split('::', 1)
    spec = importlib.util.find_spec(scope) if scope in MODULE2PACKAGE \
        else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"config '{config}': unknown or uninstalled scope '{scope}' "
            f'(known: {", ".join(sorted(MODULE2PACKAGE))})')
    path = osp.join(spec.submodule_search_locations[0], '.mim', 'configs', rel)
    if not osp.isfile(path):
        raise ConfigError(f"config '{config}' does not exist (looked for "
                          f'{path})')
    return path


def load_tool_config(config: str, cfg_options: Optional[dict] = None):
    """``Config.fromfile`` of a path or ``scope::`` name, with a tool's
    ``--cfg-options`` merged in. Raises :class:`ConfigError` (one line)."""
    from mmengine.config import Config
    path = resolve_config_path(config)
    try:
        cfg = Config.fromfile(path)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
    except (OSError, SyntaxError, ImportError, KeyError, TypeError, ValueError,
            AttributeError) as e:
        raise ConfigError(f'{config}: {_one_line(e)}') from e
    return cfg


def _one_line(e: BaseException) -> str:
    text = ' '.join(str(e).split()) or type(e).__name__
    if isinstance(e, (KeyError, AttributeError, TypeError, ImportError,
                      OSError, SyntaxError)):
        text = f'{type(e).__name__}: {text}'
    return text


@contextlib.contextmanager
def config_errors(config: str):
    """Exit with one ``error: CONFIG: message`` line when the block raises a
    config error: :class:`ConfigError`, or the ``ValueError``/``TypeError``/
    ``KeyError`` of building the config's modules (a bad option, an unknown
    type). ``LORS_DET_TRACEBACK=1`` re-raises instead."""
    try:
        yield
    except (ConfigError, ValueError, TypeError, KeyError) as e:
        if os.environ.get('LORS_DET_TRACEBACK', '') not in ('', '0'):
            raise
        message = _one_line(e)
        if not isinstance(e, ConfigError):
            message = f'{config}: {message}'
        sys.exit(f'error: {message}')
