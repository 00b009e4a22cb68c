"""Reading checkpoint files: the one place where lors_det unpickles.

Every tool, converter, hook, ``--resume``, ``load_from`` and auto-resume
reads checkpoints through :func:`load_checkpoint_file` (mmengine's loader for
local paths is replaced by it in :func:`register_checkpoint_loader`, which
``import lors_det`` calls). A test scans ``lors_det/`` and ``tools/`` for any
other ``torch.load``/``pickle.load``/mmengine checkpoint loading.

Unpickling
----------
A checkpoint is a pickle, and a pickle can run code. Files are read with a
restricted unpickler that builds only the data types checkpoints hold:

* Python containers and scalars (no global needed), ``set``, ``frozenset``,
  ``slice``, ``complex``;
* ``collections.OrderedDict`` (state dicts) and ``collections.Counter``
  (``MultiStepLR``'s milestones);
* tensors, parameters, storages, ``torch.Size`` and dtypes: torch's own
  ``weights_only`` allow-list;
* numpy arrays, scalars and dtypes (``numpy.ndarray``, ``numpy.dtype`` and
  the ``numpy.dtypes`` classes, ``numpy[._]core.multiarray._reconstruct`` /
  ``scalar``) with ``_codecs.encode`` for their bytes under protocol 2;
* mmengine's ``HistoryBuffer`` (the message hub's logs), with ``getattr``
  only for its statistics methods (``min``, ``max``, ``current``, ``mean``).

Any other global is refused, and so is pickle's BUILD (``__setstate__`` /
attribute update) on anything but an instance of those data types: a file
cannot patch a class, a module or a function (e.g. replace
``collections.Counter.__contains__`` for the whole process). The
unpickler is the pure-Python one of the standard library (its opcode table
can be overridden; checkpoints' pickles are small, the tensor bytes are
read by torch).

A file that needs more (e.g. a checkpoint that pickled a custom class) is
refused with :class:`UntrustedCheckpointError` naming the global it wanted.
It loads with a full unpickle only when trusted: ``trusted=True`` or the
environment variable ``LORS_DET_TRUST_CHECKPOINTS`` (:func:`trust_from_env`:
``1``/``true``/``yes`` trust, ``0``/``false``/``no``/empty do not, anything
else is an error naming the variable).

Damaged files (empty, truncated zip, CRC mismatch, not a PyTorch file,
errors while unpickling) raise :class:`CheckpointError` naming the file.

The state dict inside a checkpoint and its comparison with a model live in
:mod:`.weights`.
"""
import os
import os.path as osp
import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from typing import Optional

import torch

__all__ = [
    'CheckpointError', 'UntrustedCheckpointError', 'CheckpointMismatchError',
    'TRUST_ENV', 'trust_from_env', 'load_checkpoint_file',
    'register_checkpoint_loader', 'NO_WEIGHTS', 'NoPublishedWeightsError',
    'read_once'
]

TRUST_ENV = 'LORS_DET_TRUST_CHECKPOINTS'
_TRUE = ('1', 'true', 'yes')
_FALSE = ('', '0', 'false', 'no')


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used (truncated, corrupt, not a
    checkpoint, wrong weights). The message names the file."""


class UntrustedCheckpointError(CheckpointError):
    """Loading the file would need a full (code-executing) unpickle."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model."""


def trust_from_env() -> bool:
    """Whether :data:`TRUST_ENV` allows full unpickles.

    Raises:
        ValueError: a value other than 1/true/yes or 0/false/no/empty
            (case-insensitive).
    """
    value = os.environ.get(TRUST_ENV, '').strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f'environment variable {TRUST_ENV}={os.environ[TRUST_ENV]!r} is not '
        'understood: use 1/true/yes to trust checkpoint files (full '
        'unpickle, can run code) or 0/false/no (or unset) not to')


# ---------------------------------------------------------------------------
# restricted unpickler
# ---------------------------------------------------------------------------
_SAFE_GLOBALS = {
    ('collections', 'OrderedDict'),
    ('collections', 'Counter'),
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'),  # numpy >= 2
    ('numpy._core.multiarray', 'scalar'),
    ('_codecs', 'encode'),
    ('builtins', 'set'),
    ('builtins', 'frozenset'),
    ('builtins', 'slice'),
    ('builtins', 'complex'),
}
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _torch_safe_globals() -> set:
    """torch's ``weights_only`` allow-list, as ``'module.name'``."""
    from torch import _weights_only_unpickler
    return set(_weights_only_unpickler._get_allowed_globals())


def _buildable_types() -> tuple:
    """Types whose instances BUILD may update: the data types above."""
    from collections import Counter

    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    return (OrderedDict, Counter, HistoryBuffer, np.ndarray, np.dtype,
            torch.Tensor)


class _Refused(pickle.UnpicklingError):

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _history_buffer_getattr(obj, name, *default):
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(_HISTORY_BUFFER_METHODS) | set(
        getattr(HistoryBuffer, '_statistics_methods', {}))
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(obj, name, *default)
    raise _Refused(f'builtins.getattr({obj!r}, {name!r})')


class _RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler with a global allow-list and a checked BUILD."""

    _torch_allowed: Optional[set] = None
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        if module in ('builtins', '__builtin__') and name == 'getattr':
            return _history_buffer_getattr
        if module == '__builtin__':
            module = 'builtins'
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == 'numpy.dtypes':  # numpy >= 1.25 dtype classes
            import numpy as np
            obj = super().find_class(module, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                return obj
        if _RestrictedUnpickler._torch_allowed is None:
            _RestrictedUnpickler._torch_allowed = _torch_safe_globals()
        if f'{module}.{name}' in _RestrictedUnpickler._torch_allowed:
            return super().find_class(module, name)
        if module == 'torch' and isinstance(
                getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise _Refused(f'{module}.{name}')

    def load_build(self):
        target = self.stack[-2]
        if not isinstance(target, _buildable_types()) or isinstance(
                target, type):
            raise _Refused(f'BUILD (set state) on {type(target).__name__} '
                           f'{getattr(target, "__qualname__", "")}'.rstrip())
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


_restricted_pickle = types.ModuleType('lors_det_restricted_pickle')
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = _restricted_load
_restricted_pickle.UnpicklingError = pickle.UnpicklingError

# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
_ZIP_MAGIC = b'PK\x03\x04'
_LOAD_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError,
                zipfile.BadZipFile, ValueError, KeyError, OSError,
                AttributeError, IndexError, TypeError, UnicodeDecodeError)


def _corrupt(path: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint file '{path}' is truncated or corrupt ({reason}), so it "
        'cannot be loaded. Interrupted saves and incomplete copies or '
        'downloads leave files like this: use an earlier checkpoint (the '
        "work dir's 'last_checkpoint' file names the last one written "
        'completely) or copy/download the file again.')


def _check_container(path: str) -> None:
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
                has_pickle = any(n.endswith('data.pkl') for n in zf.namelist())
                bad = zf.testzip() if has_pickle else None
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
                         trusted: Optional[bool] = None):
    """Load a checkpoint file without running code from it.

    Args:
        path (str | PathLike): a local file.
        map_location: as for :func:`torch.load`. Defaults to ``'cpu'``.
        trusted (bool, optional): allow a full (code-executing) unpickle for
            a file that needs one. None (default): :func:`trust_from_env`.

    Returns:
        The unpickled object (usually a dict).

    Raises:
        FileNotFoundError, IsADirectoryError: no such file.
        CheckpointError: empty, truncated, corrupt, or not a checkpoint.
        UntrustedCheckpointError: needs a full unpickle and not trusted.
        ValueError: :data:`TRUST_ENV` is set to a value not understood.
    """
    path = osp.expanduser(os.fspath(path))
    if trusted is None:
        trusted = trust_from_env()
    if not osp.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: '{path}'")
    if osp.isdir(path):
        raise IsADirectoryError(
            f"checkpoint path '{path}' is a directory, expected a file")
    _check_container(path)
    try:
        return torch.load(
            path,
            map_location=map_location,
            pickle_module=_restricted_pickle,
            weights_only=False)
    except _Refused as e:
        refused = e.what
    except _LOAD_ERRORS as e:
        raise _corrupt(path, f'{type(e).__name__}: {e}') from e
    if not trusted:
        raise UntrustedCheckpointError(
            f"checkpoint file '{path}' is not a plain checkpoint: unpickling "
            f"it needs '{refused}', and a full unpickle can run arbitrary "
            'code. If you trust this file, set the environment variable '
            f'{TRUST_ENV}=1 (or pass trusted=True).')
    warnings.warn(
        f"loading '{path}' with a full unpickle because it needs "
        f"'{refused}' ({TRUST_ENV} is set): this can run arbitrary code.")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except _LOAD_ERRORS as e:
        raise _corrupt(path, f'{type(e).__name__}: {e}') from e


# checkpoints already read by a tool, served once to mmengine's loader
_OFFERED: dict = {}


def _file_key(path) -> tuple:
    path = osp.abspath(osp.expanduser(os.fspath(path)))
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns, st.st_ino


def read_once(path, checkpoint) -> '_Offer':
    """``with read_once(path, checkpoint):`` inside the block, mmengine's
    next read of ``path`` (``Runner.resume`` / ``load_checkpoint``) gets
    ``checkpoint`` (already
    read by :func:`load_checkpoint_file` and checked) instead of reading the
    file again; a file changed since (size, mtime, inode) is read as usual.
    Later reads, and reads after the block, read the file.

    ``tools/train.py``: the file is read once, checked, then used by the
    runner. Only the entry served to mmengine holds the checkpoint (drop the
    caller's reference inside the block), so it is freed once loaded. The
    tensors stay on the CPU: mmengine copies them into the model and the
    optimizer moves its state to the parameters' device.
    """
    return _Offer(_file_key(path), checkpoint)


class _Offer:
    """The ``with`` block of :func:`read_once` (it keeps only the key)."""

    def __init__(self, key, checkpoint):
        self.key = key
        _OFFERED[key] = checkpoint

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _OFFERED.pop(self.key, None)


def _mmengine_local_loader(filename, map_location):
    if _OFFERED:
        try:
            return _OFFERED.pop(_file_key(filename))
        except (KeyError, OSError):
            pass
    return load_checkpoint_file(filename, map_location)


# The metafiles' ``Weights`` while this project has trained no checkpoint:
# mim and mmengine need the field (without it `mim download` fails with
# "ValueError ... {'weight'}", DetInferencer with "KeyError: 'Weights'");
# loading it says in one line that there are none (``mim download`` shows
# the marker in requests' "No connection adapters were found for ...").
NO_WEIGHTS = 'lors-det-no-weights-yet://'


class NoPublishedWeightsError(FileNotFoundError):
    """A metafile model has no published checkpoint."""


def _no_published_weights(filename, map_location=None, logger=None):
    name = filename[len(NO_WEIGHTS):]
    raise NoPublishedWeightsError(
        f'lors_det has published no trained weights for {name} yet: '
        f'train it (tools/train.py or `mim train lors_det {name}.py`) '
        'and pass the checkpoint (weights=...)')


def register_checkpoint_loader() -> None:
    """Make mmengine read local checkpoints with :func:`load_checkpoint_file`
    (``Runner.load_checkpoint``/``resume``: ``load_from``, ``--resume``,
    ``init_detector``) and refuse the metafiles' :data:`NO_WEIGHTS` marker
    with :class:`NoPublishedWeightsError`. Remote schemes (``http://``,
    ...) are unchanged. Idempotent."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes='', loader=_mmengine_local_loader, force=True)
    CheckpointLoader.register_scheme(
        prefixes=NO_WEIGHTS, loader=_no_published_weights, force=True)
