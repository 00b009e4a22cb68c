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

Checkpoint vs model (separate from the reader)
----------------------------------------------
:func:`extract_state_dict` is the one state-dict extractor (mmengine
``state_dict``, official ``model``, or a bare dict; DDP ``module.`` prefix
removed). :func:`check_state_dict` is the one comparison with a model: it
refuses values that cannot be weights (not a tensor, NaN/Inf) and entries of
another shape or dtype, naming the keys; missing model weights are an error
unless ``require_all=False`` (fine-tuning with ``load_from``). It reads only
the names, shapes and dtypes of the model's state (no copy of the model,
nothing parsed from the checkpoint's config text). :func:`load_checked`
checks an already read checkpoint and loads it; :func:`load_weights` reads,
checks and loads.
"""
import os
import os.path as osp
import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch

__all__ = [
    'CheckpointError', 'UntrustedCheckpointError', 'CheckpointMismatchError',
    'TRUST_ENV', 'trust_from_env', 'load_checkpoint_file',
    'extract_state_dict', 'check_state_dict', 'check_checkpoint',
    'load_checked', 'load_into_runner', 'load_weights',
    'register_checkpoint_loader'
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
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    from collections import Counter
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
        if module == 'torch' and isinstance(getattr(torch, name, None),
                                            torch.dtype):
            return getattr(torch, name)
        raise _Refused(f'{module}.{name}')

    def load_build(self):
        target = self.stack[-2]
        if not isinstance(target, _buildable_types()) or isinstance(
                target, type):
            raise _Refused(
                f'BUILD (set state) on {type(target).__name__} '
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
                has_pickle = any(
                    n.endswith('data.pkl') for n in zf.namelist())
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


def load_checkpoint_file(path, map_location='cpu',
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
        return torch.load(path, map_location=map_location,
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
        return torch.load(path, map_location=map_location,
                          weights_only=False)
    except _LOAD_ERRORS as e:
        raise _corrupt(path, f'{type(e).__name__}: {e}') from e


def _mmengine_local_loader(filename, map_location):
    return load_checkpoint_file(filename, map_location)


def register_checkpoint_loader() -> None:
    """Make mmengine read local checkpoints with :func:`load_checkpoint_file`
    (``Runner.load_checkpoint``/``resume``: ``load_from``, ``--resume``,
    ``init_detector``). Remote schemes (``http://``, ...) are unchanged.
    Idempotent."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes='', loader=_mmengine_local_loader, force=True)


# ---------------------------------------------------------------------------
# checkpoint <-> model
# ---------------------------------------------------------------------------
def extract_state_dict(checkpoint, path: str) -> 'OrderedDict':
    """The weights of a loaded checkpoint: its ``state_dict`` (mmengine),
    its ``model`` (some official releases) or the dict itself; a ``module.``
    prefix (DDP) on every key is removed.

    Raises:
        CheckpointMismatchError: no dict of weights, naming ``path``.
    """
    if isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('state_dict'), dict):
        state = checkpoint['state_dict']
    elif isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('model'), dict):
        state = checkpoint['model']
    else:
        state = checkpoint
    if not isinstance(state, dict) or not state:
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' holds no state dict (got "
            f'{type(checkpoint).__name__}'
            + (f' with keys {sorted(map(str, checkpoint))[:8]}'
               if isinstance(checkpoint, dict) else '') + ')')
    if all(isinstance(k, str) and k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return OrderedDict(state)


def _examples(items: Sequence[str], k: int = 5) -> str:
    items = list(items)
    more = f', ... ({len(items) - k} more)' if len(items) > k else ''
    return ', '.join(items[:k]) + more


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, 'module'):  # DDP / TTA wrappers
        model = model.module
    return model


def _expected_entries(model: torch.nn.Module,
                      state: dict) -> Dict[str, tuple]:
    """``{key: (shape, dtype)}`` of the model's state dict once ``state`` is
    loaded, read from the model without copying it. A module that adapts to
    the checkpoint while loading (``LoRITaLinear`` adopts a compressed
    checkpoint's factor shapes) says how, with
    ``state_entries_after_load(state, prefix)``: its entries replace the
    module's."""
    expected = {k: (v.shape, v.dtype)
                for k, v in model.state_dict(keep_vars=True).items()}
    for name, module in model.named_modules():
        after_load = getattr(module, 'state_entries_after_load', None)
        if after_load is None:
            continue
        prefix = f'{name}.' if name else ''
        entries = after_load(state, prefix)
        if entries is not None:
            for key in [k for k in expected if k.startswith(prefix)]:
                del expected[key]
            expected.update(entries)
    return expected


def check_state_dict(model: torch.nn.Module, state: dict, path: str,
                     require_all: bool = True,
                     config: Optional[str] = None,
                     allow_unexpected: bool = True) -> None:
    """Refuse weights that cannot be right for ``model``.

    Raises :class:`CheckpointMismatchError` naming ``path`` and the keys
    when an entry is not a tensor, a floating-point tensor holds NaN/Inf, an
    entry of the model has another shape or dtype in ``state``, or (with
    ``require_all``) a weight of the model is missing. Extra entries are
    tolerated (mmengine ignores them) and listed only alongside an error,
    unless ``allow_unexpected=False`` (a converter's output must not have
    any).
    ``model`` may be wrapped (DDP, TTA); it is neither changed nor copied
    (only the names, shapes and dtypes of its state are read).
    """
    model = _unwrap(model)
    not_tensor = [f'{k} ({type(v).__name__})' for k, v in state.items()
                  if not isinstance(v, torch.Tensor)]
    if not_tensor:
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' has {len(not_tensor)} weight entries "
            f'that are not tensors, e.g. {_examples(not_tensor)}; it was not '
            'saved by torch.save(model.state_dict()) or mmengine')
    non_finite = [k for k, v in state.items() if v.is_floating_point()
                  and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointMismatchError(
            f"checkpoint file '{path}' has NaN or infinite values in "
            f'{len(non_finite)} weights, e.g. {_examples(non_finite)}: the '
            'run that saved it had diverged; use an earlier checkpoint')
    expected = _expected_entries(model, state)
    missing = [k for k in expected if k not in state] if require_all else []
    unexpected = [k for k in state if k not in expected]
    bad_shape = [
        f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(shape)}'
        for k, (shape, _) in expected.items()
        if k in state and state[k].shape != shape
    ]
    bad_dtype = [
        f'{k}: checkpoint {state[k].dtype} vs model {dtype}'
        for k, (_, dtype) in expected.items()
        if k in state and state[k].dtype != dtype
    ]
    if not (missing or bad_shape or bad_dtype or
            (unexpected and not allow_unexpected)):
        return
    lines = [f"checkpoint file '{path}' does not fit the model"
             + (f" built from '{config}'" if config else '') + ':']
    if missing:
        lines.append(f"  {len(missing)} of the model's {len(expected)} "
                     f'weights are missing from it, e.g. {_examples(missing)}')
    if bad_shape:
        lines.append(f'  {len(bad_shape)} have another shape, e.g. '
                     f'{_examples(bad_shape, 3)}')
    if bad_dtype:
        lines.append(f'  {len(bad_dtype)} have another dtype, e.g. '
                     f'{_examples(bad_dtype, 3)}')
    if unexpected:
        lines.append(f'  {len(unexpected)} of its entries are not in the '
                     f'model, e.g. {_examples(unexpected)}')
    lines.append('It was probably trained with another config (e.g. '
                 'AdaMixer vs AdaMixer+LORS); use it with the config it was '
                 "trained with (stored in the checkpoint's meta['cfg']).")
    raise CheckpointMismatchError('\n'.join(lines))


def check_checkpoint(model: torch.nn.Module, checkpoint, path: str,
                     require_all: bool = True,
                     config: Optional[str] = None) -> 'OrderedDict':
    """:func:`extract_state_dict` then :func:`check_state_dict` on a loaded
    checkpoint; returns the state."""
    state = extract_state_dict(checkpoint, path)
    check_state_dict(model, state, path, require_all, config)
    return state


def load_checked(model: torch.nn.Module, checkpoint, path: str,
                 require_all: bool = True,
                 config: Optional[str] = None) -> 'OrderedDict':
    """:func:`check_checkpoint` on an already read ``checkpoint``, then load
    its weights into ``model`` (unwrapped from DDP/TTA); returns the
    state."""
    state = check_checkpoint(model, checkpoint, path, require_all, config)
    _unwrap(model).load_state_dict(state, strict=False)  # checked above
    return state


def load_into_runner(runner, checkpoint, path: str,
                     config: Optional[str] = None) -> None:
    """Load an already read ``checkpoint`` into ``runner.model`` as
    ``Runner.load_checkpoint`` does, without reading the file again: the
    hooks' ``after_load_checkpoint`` first (``EMAHook`` swaps in the EMA
    weights), then :func:`load_checked` (every weight present)."""
    runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    load_checked(runner.model, checkpoint, path, config=config)
    runner.logger.info(f'Load checkpoint from {path}')


def load_weights(model: torch.nn.Module, path: str,
                 require_all: bool = True,
                 config: Optional[str] = None) -> dict:
    """Read ``path``, check its weights against ``model`` and load them.

    Returns:
        dict: the loaded checkpoint (its ``meta`` etc. for the caller).
    """
    checkpoint = load_checkpoint_file(path)
    load_checked(model, checkpoint, path, require_all, config)
    return checkpoint
