"""Checkpoint files: safe and clear loading, atomic writing.

Loading: :func:`load_checkpoint_file`
-------------------------------------
torch >= 2.6 loads with ``weights_only=True`` by default, which refuses
mmengine checkpoints: their ``message_hub`` holds ``HistoryBuffer`` objects
(pickled together with ``getattr(HistoryBuffer, 'min')`` and friends) and
their ``meta`` may hold numpy scalars. Falling back to a plain
``weights_only=False`` load would let any checkpoint file run arbitrary code.
The loader therefore tries three levels, from safest to least safe:

1. ``torch.load(weights_only=True)`` (where torch has the argument): torch's
   own allow-list. Plain state dicts and tensor-only files load here.
2. A *restricted* unpickler: torch's allow-list plus the few types an mmengine
   checkpoint holds (``collections.OrderedDict``/``Counter``, mmengine's
   ``HistoryBuffer``, numpy arrays, scalars and dtypes, ``_codecs.encode``)
   and ``getattr`` limited to ``HistoryBuffer``'s statistics methods. Every
   other global in the pickle is refused, so this level cannot run code
   either. The checkpoints that ``tools/train.py`` writes load here, on every
   torch version.
3. ``torch.load(weights_only=False)``: a full unpickle, i.e. the file can run
   arbitrary code. Only with ``trusted=True`` (or the environment variable
   ``LORS_DET_TRUST_CHECKPOINTS=1`` for the registered mmengine loader, see
   :func:`register_checkpoint_loader`), and with a warning. Without trust, a
   file that needs this level is refused with :class:`UntrustedCheckpointError`
   naming the file and the global it wanted.

Before unpickling, the container is checked: a missing file raises
``FileNotFoundError``; an empty file, a zip archive without its central
directory (truncated copy / interrupted save), a CRC mismatch, or bytes that
are not a PyTorch file raise :class:`CheckpointError` naming the file. Errors
raised while unpickling a damaged file (``RuntimeError``, ``EOFError``,
``pickle.UnpicklingError``, ``zipfile.BadZipFile``, ...) become
:class:`CheckpointError` naming the file too.

Writing: :func:`atomic_write_bytes`
-----------------------------------
Writes to ``<path>.partial`` in the same directory, flushes and fsyncs it,
then ``os.replace``-s it onto ``path`` (atomic on POSIX) and fsyncs the
directory. A crash or a full disk during the write leaves the previous file
at ``path`` untouched. :class:`AtomicLocalBackend` is mmengine's
``LocalBackend`` with its ``put``/``put_text`` made atomic this way; it is
registered as the file backend ``'atomic_local'`` and used by
:class:`lors_det.engine.AtomicCheckpointHook`.
"""
import copy
import inspect
import os
import os.path as osp
import pickle
import re
import types
import warnings
import zipfile
from typing import Iterable, Optional, Sequence, Tuple

import torch
from mmengine.fileio import LocalBackend, register_backend

__all__ = [
    'CheckpointError', 'UntrustedCheckpointError', 'CheckpointMismatchError',
    'load_checkpoint_file', 'check_checkpoint_matches_model',
    'register_checkpoint_loader', 'atomic_write_bytes', 'atomic_write_text',
    'AtomicLocalBackend', 'PARTIAL_SUFFIX', 'TRUST_ENV'
]

PARTIAL_SUFFIX = '.partial'
TRUST_ENV = 'LORS_DET_TRUST_CHECKPOINTS'


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used (truncated, corrupt, not a
    checkpoint, ...). The message names the file."""


class UntrustedCheckpointError(CheckpointError):
    """Loading the file would need a full (code-executing) unpickle."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model (another config)."""


# ---------------------------------------------------------------------------
# restricted unpickler (level 2)
# ---------------------------------------------------------------------------
_EXTRA_SAFE_GLOBALS = {
    ('collections', 'OrderedDict'),
    ('collections', 'Counter'),  # MultiStepLR's milestones
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'),  # numpy >= 2
    ('numpy._core.multiarray', 'scalar'),
    ('_codecs', 'encode'),  # bytes of numpy arrays under pickle protocol 2
    ('builtins', 'set'),
    ('builtins', 'frozenset'),
    ('builtins', 'slice'),
    ('builtins', 'complex'),
}
_BUILTIN_MODULES = ('builtins', '__builtin__')
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _torch_safe_globals() -> set:
    """torch's own ``weights_only`` allow-list, as ``'module.name'``."""
    try:
        from torch import _weights_only_unpickler as wou
        allowed = set(wou._get_allowed_globals())
    except Exception:  # private API; fall back to a minimal list
        allowed = {
            'collections.OrderedDict', 'torch._utils._rebuild_tensor_v2',
            'torch._utils._rebuild_parameter', 'torch.Size',
            'torch.nn.parameter.Parameter'
        }
    try:  # torch >= 2.4: globals the user allowed explicitly
        allowed |= {
            f'{g.__module__}.{g.__name__}'
            for g in torch.serialization.get_safe_globals()
            if hasattr(g, '__module__') and hasattr(g, '__name__')
        }
    except Exception:
        pass
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):

    def __init__(self, module: str, name: str):
        super().__init__(f'{module}.{name}')
        self.global_name = f'{module}.{name}'


def _history_buffer_getattr(obj, name, *default):
    """``getattr`` as mmengine's ``HistoryBuffer`` pickles need it: only
    its statistics methods (``min``, ``max``, ``current``, ``mean`` and
    registered ones)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(_HISTORY_BUFFER_METHODS) | set(
        getattr(HistoryBuffer, '_statistics_methods', {}))
    if obj is HistoryBuffer and isinstance(name, str) and \
            name in allowed and not name.startswith('_'):
        return getattr(obj, name, *default)
    raise _ForbiddenGlobal('builtins', f'getattr({obj!r}, {name!r})')


class _RestrictedUnpickler(pickle.Unpickler):

    _torch_allowed: Optional[set] = None

    def find_class(self, module, name):
        if module in _BUILTIN_MODULES and name == 'getattr':
            return _history_buffer_getattr
        key = ('builtins' if module in _BUILTIN_MODULES else module, name)
        if key in _EXTRA_SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == 'numpy.dtypes':  # numpy >= 1.25 dtype classes
            obj = super().find_class(module, name)
            import numpy as np
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                return obj
        if _RestrictedUnpickler._torch_allowed is None:
            _RestrictedUnpickler._torch_allowed = _torch_safe_globals()
        if f'{module}.{name}' in _RestrictedUnpickler._torch_allowed:
            return super().find_class(module, name)
        if module == 'torch' and isinstance(getattr(torch, name, None),
                                            torch.dtype):
            return getattr(torch, name)
        raise _ForbiddenGlobal(module, name)


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


_restricted_pickle = types.ModuleType('lors_det_restricted_pickle')
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = _restricted_load
_restricted_pickle.UnpicklingError = pickle.UnpicklingError
_restricted_pickle.__name__ = 'lors_det_restricted_pickle'

# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
_ZIP_MAGIC = b'PK\x03\x04'
_LOAD_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError,
                zipfile.BadZipFile, ValueError, KeyError, OSError,
                AttributeError, IndexError, TypeError, UnicodeDecodeError)


def _torch_has_weights_only() -> bool:
    try:
        return 'weights_only' in inspect.signature(torch.load).parameters
    except (TypeError, ValueError):
        return False


def _corrupt(path: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file '{path}' is truncated or corrupt ({reason}), so it "
        'cannot be loaded. Interrupted saves and incomplete copies or '
        'downloads leave files like this: use an earlier checkpoint (the '
        "work dir's 'last_checkpoint' file names the last one written "
        'completely) or copy/download the file again.')


def _check_container(path: str, verify_crc: bool) -> None:
    """Check what can be checked without unpickling."""
    size = osp.getsize(path)
    if size == 0:
        raise _corrupt(path, 'the file is empty, 0 bytes')
    with open(path, 'rb') as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise _corrupt(
                path, f'a zip archive of {size} bytes without its central '
                'directory: the end of the file is missing')
        try:
            with zipfile.ZipFile(path) as zf:
                has_pickle = any(
                    n.endswith('data.pkl') for n in zf.namelist())
                bad = zf.testzip() if verify_crc and has_pickle else None
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError,
                ValueError) as e:
            raise _corrupt(path, f'{type(e).__name__}: {e}') from e
        if not has_pickle:
            raise CheckpointError(
                f"checkpoint file '{path}' is a zip archive but not a "
                'PyTorch checkpoint (it has no data.pkl record)')
        if bad is not None:
            raise _corrupt(path, f'CRC mismatch in record {bad!r}')
    elif head[:1] != b'\x80':  # neither zip nor a (legacy) pickle stream
        raise CheckpointError(
            f"checkpoint file '{path}' is not a PyTorch checkpoint: it "
            f'starts with the bytes {head!r} (expected a zip archive or a '
            'pickle stream). Is it a text/HTML file, e.g. a failed '
            'download?')


def load_checkpoint_file(path,
                         map_location='cpu',
                         trusted: bool = False,
                         verify_crc: bool = True):
    """Load a checkpoint file as safely as it allows, with clear errors.

    Args:
        path (str | PathLike): local checkpoint file.
        map_location: as for :func:`torch.load`. Defaults to ``'cpu'``.
        trusted (bool): allow a full (code-executing) unpickle for files
            that need one. Only for files you trust. Defaults to False.
        verify_crc (bool): check the CRC of every zip record first (reads
            the file once more). Defaults to True.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated, corrupt, or not a checkpoint.
        UntrustedCheckpointError: needs a full unpickle and not trusted.
    """
    path = osp.expanduser(os.fspath(path))
    if not osp.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: '{path}'")
    if osp.isdir(path):
        raise IsADirectoryError(
            f"checkpoint path '{path}' is a directory, expected a file")
    _check_container(path, verify_crc)

    if _torch_has_weights_only():  # level 1
        try:
            return torch.load(path, map_location=map_location,
                              weights_only=True)
        except pickle.UnpicklingError:
            pass  # refused by the allow-list, or damaged: try level 2
        except _LOAD_ERRORS as e:
            raise _corrupt(path, f'{type(e).__name__}: {e}') from e

    try:  # level 2
        return torch.load(
            path,
            map_location=map_location,
            pickle_module=_restricted_pickle,
            weights_only=False)
    except _ForbiddenGlobal as e:
        forbidden = e.global_name
    except RuntimeError as e:
        if 'pickle_module' in str(e):  # e.g. TORCH_FORCE_WEIGHTS_ONLY_LOAD
            raise CheckpointError(
                f"checkpoint file '{path}' is an mmengine checkpoint but "
                'torch refused the restricted unpickler for it '
                f'({e}); unset TORCH_FORCE_WEIGHTS_ONLY_LOAD or add '
                'mmengine.logging.history_buffer.HistoryBuffer to '
                'torch.serialization.add_safe_globals') from e
        raise _corrupt(path, f'{type(e).__name__}: {e}') from e
    except _LOAD_ERRORS as e:
        raise _corrupt(path, f'{type(e).__name__}: {e}') from e

    if not trusted:
        raise UntrustedCheckpointError(
            f"checkpoint file '{path}' is neither a plain state dict nor an "
            f"mmengine checkpoint: unpickling it needs '{forbidden}', and a "
            'full unpickle can run arbitrary code. If you trust this file, '
            'load it with trusted=True (the tools: set the environment '
            f'variable {TRUST_ENV}=1).')
    warnings.warn(
        f"loading '{path}' with a full unpickle (weights_only=False) because "
        f"it needs '{forbidden}': this can run arbitrary code; only do this "
        'for files you trust.')
    try:  # level 3
        return torch.load(path, map_location=map_location,
                          **({'weights_only': False}
                             if _torch_has_weights_only() else {}))
    except _LOAD_ERRORS as e:
        raise _corrupt(path, f'{type(e).__name__}: {e}') from e


def _mmengine_local_loader(filename, map_location):
    trusted = os.environ.get(TRUST_ENV, '') not in ('', '0', 'false', 'False')
    return load_checkpoint_file(filename, map_location, trusted=trusted)


def register_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints with :func:`load_checkpoint_file`.

    Replaces mmengine's loader for plain paths (scheme ``''``), which calls
    ``torch.load`` without ``weights_only`` (so it fails on torch >= 2.6 for
    mmengine checkpoints and gives raw errors for damaged files). Used by
    ``Runner.load_checkpoint`` (``load_from``, ``--resume``, tools/test.py).
    Remote schemes (``http://``, ``s3://``, ...) are unchanged. Idempotent.
    """
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes='', loader=_mmengine_local_loader, force=True)


# ---------------------------------------------------------------------------
# checkpoint <-> model
# ---------------------------------------------------------------------------
def _examples(items: Sequence[str], k: int = 5) -> str:
    items = list(items)
    more = f', ... ({len(items) - k} more)' if len(items) > k else ''
    return ', '.join(items[:k]) + more


def check_checkpoint_matches_model(
        model: torch.nn.Module,
        checkpoint,
        path: str,
        revise_keys: Iterable[Tuple[str, str]] = ((r'^module\.', ''), ),
        config: Optional[str] = None) -> None:
    """Raise :class:`CheckpointMismatchError` unless every parameter and
    buffer of ``model`` is in the checkpoint with the same shape.

    ``model`` may be wrapped (DDP, TTA: ``.module``); the wrapped model is
    compared.

    ``model`` is not changed; the shapes are those of a copy of it after a
    non-strict ``load_state_dict`` of the checkpoint, so modules that adapt
    to the checkpoint while loading (e.g. ``LoRITaLinear`` with compressed
    factors) are compared after adapting.

    Extra checkpoint entries are tolerated (mmengine ignores them too). The
    message names the file, counts and examples of missing, unexpected and
    differently shaped entries, and the model type the checkpoint was
    trained with when its ``meta`` tells.
    """
    while hasattr(model, 'module'):  # DDP / TTA wrappers
        model = model.module
    state = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' holds no state dict (got "
            f'{type(checkpoint).__name__})')
    revised = {}
    for k, v in state.items():
        for pattern, repl in revise_keys:
            k = re.sub(pattern, repl, k)
        revised[k] = v
    # Modules may adapt to the checkpoint while loading (LoRITaLinear takes
    # the factor shapes of a compressed checkpoint): compare with a copy of
    # the model after a non-strict load, as mmengine will load it.
    probe = copy.deepcopy(model)
    try:
        probe.load_state_dict(revised, strict=False)
    except RuntimeError:
        pass  # shape mismatches, reported below
    expected = probe.state_dict()
    del probe
    missing = [k for k in expected if k not in revised]
    unexpected = [k for k in revised if k not in expected]
    mismatched = [
        f'{k}: checkpoint {tuple(revised[k].shape)} vs model '
        f'{tuple(expected[k].shape)}' for k in expected
        if k in revised and hasattr(revised[k], 'shape')
        and tuple(revised[k].shape) != tuple(expected[k].shape)
    ]
    if not missing and not mismatched:
        return
    lines = [
        f"checkpoint file '{path}' does not fit the model"
        + (f" built from '{config}'" if config else '') + ':'
    ]
    if missing:
        lines.append(f'  {len(missing)} of the model\'s {len(expected)} '
                     f'weights are missing from it, e.g. {_examples(missing)}')
    if mismatched:
        lines.append(f'  {len(mismatched)} have another shape, e.g. '
                     f'{_examples(mismatched, 3)}')
    if unexpected:
        lines.append(f'  {len(unexpected)} of its entries are not in the '
                     f'model, e.g. {_examples(unexpected)}')
    meta_cfg = checkpoint.get('meta', {}).get('cfg') if isinstance(
        checkpoint.get('meta'), dict) else None
    if isinstance(meta_cfg, str):
        m = re.search(r"mixing\s*=\s*dict\(([^()]*(\([^()]*\)[^()]*)*)\)",
                      meta_cfg)
        if m is not None:
            lines.append('  the checkpoint was trained with decoder mixing='
                         f"dict({' '.join(m.group(1).split())})")
    lines.append('It was probably trained with another config (e.g. '
                 'AdaMixer vs AdaMixer+LORS); use it with the config it was '
                 "trained with (stored in the checkpoint's meta['cfg']).")
    raise CheckpointMismatchError('\n'.join(lines))


# ---------------------------------------------------------------------------
# atomic writing
# ---------------------------------------------------------------------------
def _fsync_dir(dirname: str) -> None:
    try:
        fd = os.open(dirname or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not supported by every file system
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either its old content
    or the complete new one, never a partial file.

    Writes ``<path>.partial`` in the same directory (same file system, so
    the rename is atomic), fsyncs it, ``os.replace``-s it onto ``path`` and
    fsyncs the directory. On any error the partial file is removed and the
    error re-raised.
    """
    path = os.fspath(path)
    dirname = osp.dirname(path)
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    tmp = path + PARTIAL_SUFFIX
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dirname)


def atomic_write_text(path, text: str, encoding: str = 'utf-8') -> None:
    """:func:`atomic_write_bytes` for text."""
    atomic_write_bytes(path, text.encode(encoding))


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put``/``put_text`` are atomic
    (:func:`atomic_write_bytes`). Registered as ``'atomic_local'``; select
    it with ``backend_args=dict(backend='atomic_local')``."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_text(filepath, obj, encoding)


register_backend('atomic_local', AtomicLocalBackend, force=True)
