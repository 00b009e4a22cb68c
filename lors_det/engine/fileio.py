"""Writing files without losing any: atomic writes, outputs that never
replace an input, one live run per work_dir.

* :func:`atomic_write_bytes` writes ``<path>.<pid>.partial`` next to
  ``path``, fsyncs it, ``os.replace``-s it onto ``path`` (atomic on POSIX)
  and fsyncs the directory: ``path`` is always either its old content or the
  complete new one. It first checks that the file system has room for the
  new file (its size is known: the bytes are in memory) and fails naming the
  size needed, before anything is written. Missing folders are created.
  :class:`AtomicLocalBackend` is mmengine's ``LocalBackend`` writing this way
  (the ``'atomic_local'`` file backend of
  :class:`~lors_det.engine.AtomicCheckpointHook`).
* :func:`check_outputs` refuses an output path that resolves to one of the
  tool's inputs (same file, through links too), two outputs on one path,
  and an existing output unless ``force``.
* :class:`WorkDirLock`: ``tools/train.py`` holds ``<work_dir>/.lors_det.lock``
  (pid and host) while it runs; a second run in the same work_dir refuses
  to start; the lock of a process that no longer exists (same host) is taken
  over with a warning.
"""
import io
import os
import os.path as osp
import shutil
import socket
import warnings
from typing import Dict, Optional

import filelock
import torch
from mmengine.fileio import LocalBackend, register_backend

__all__ = [
    'PARTIAL_SUFFIX', 'OutputPathError', 'atomic_write_bytes',
    'atomic_write_text', 'save_checkpoint', 'check_outputs',
    'AtomicLocalBackend', 'WorkDirLock', 'WorkDirBusyError', 'pid_alive',
    'register_atomic_backend'
]

PARTIAL_SUFFIX = '.partial'


class OutputPathError(ValueError):
    """An output path would overwrite an input or existing work."""


class WorkDirBusyError(RuntimeError):
    """Another live run holds the work_dir."""


def partial_path(path: str) -> str:
    """Where :func:`atomic_write_bytes` writes before the rename: the pid in
    the name tells whose write it is."""
    return f'{path}.{os.getpid()}{PARTIAL_SUFFIX}'


def partial_owner(partial: str) -> Optional[int]:
    """The pid in a :func:`partial_path` name (None if it has none)."""
    stem = partial[:-len(PARTIAL_SUFFIX)]
    pid = stem.rsplit('.', 1)[-1]
    return int(pid) if pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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


def _mb(n: int) -> str:
    return f'{n / 2**20:.1f} MB'


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring).

    Raises:
        OSError: not enough free space (message: the file, the size needed
            and the space free), or the write failed; ``path`` is unchanged.
    """
    path = os.fspath(path)
    dirname = osp.dirname(path)
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    free = shutil.disk_usage(dirname or '.').free
    if free < len(data):
        raise OSError(
            28, f"not enough free space to save '{path}': it needs "
            f'{_mb(len(data))} and {_mb(free)} are free in '
            f"'{osp.abspath(dirname or '.')}' (the previous file is "
            'unchanged); free some space or save elsewhere')
    tmp = partial_path(path)
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


def save_checkpoint(obj, path) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _same_file(a: str, b: str) -> bool:
    if osp.realpath(a) == osp.realpath(b):
        return True
    try:
        return osp.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Dict[str, str],
                  inputs: Dict[str, str],
                  force: bool = False) -> None:
    """Refuse outputs that would destroy an input or existing work.

    Args:
        outputs, inputs: ``{name shown to the user: path}``.
        force: allow replacing an existing output file (never an input).

    Raises:
        OutputPathError: naming the output and what it collides with.
    """
    for out_name, out in outputs.items():
        for in_name, src in inputs.items():
            if _same_file(out, src):
                raise OutputPathError(
                    f"{out_name} '{out}' is the input {in_name} '{src}': "
                    'writing it would destroy the input; choose another '
                    'output path')
        if osp.isdir(out):
            raise OutputPathError(
                f"{out_name} '{out}' is a directory, expected a file path")
        if osp.exists(out) and not force:
            raise OutputPathError(
                f"{out_name} '{out}' exists; pass --force to replace it")
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if osp.realpath(outputs[a]) == osp.realpath(outputs[b]):
                raise OutputPathError(
                    f"{a} and {b} are the same path '{outputs[a]}'")


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put``/``put_text`` are atomic
    (:func:`atomic_write_bytes`). Registered as ``'atomic_local'`` by
    :func:`register_atomic_backend`."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_text(filepath, obj, encoding)


def register_atomic_backend() -> None:
    """Register :class:`AtomicLocalBackend` as mmengine's ``'atomic_local'``
    file backend. Idempotent."""
    register_backend('atomic_local', AtomicLocalBackend, force=True)


class WorkDirLock:
    """``<work_dir>/.lors_det.lock`` held by one live run (see the module
    docstring). Use as a context manager or ``acquire()``/``release()``.

    The lock is :class:`filelock.SoftFileLock` (an exclusively created
    marker with the holder's pid and host, removed on release; a marker of
    a dead process on this host is reclaimed), never waited for
    (``timeout=0``). A marker this class wrote before filelock
    (``'PID HOST'`` on one line) is read and reclaimed the same way."""

    NAME = '.lors_det.lock'

    def __init__(self, work_dir: str):
        self.path = osp.join(work_dir, self.NAME)
        self._lock = filelock.SoftFileLock(
            self.path, timeout=0, is_singleton=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def _owner(self):
        """(pid, host) of the marker; (None, '') if unreadable."""
        try:
            with open(self.path) as f:
                fields = f.read().split()  # 'PID\nHOST\n...' or 'PID HOST'
            return int(fields[0]), (fields[1] if len(fields) > 1 else '')
        except (OSError, ValueError, IndexError):
            return None, ''

    def _take_over_dead_holder(self) -> None:
        pid, host = self._owner()
        if pid is None or host != socket.gethostname() or pid_alive(pid):
            return
        warnings.warn(f"taking over '{self.path}': its process (pid {pid}) no "
                      'longer runs (it was killed or crashed)')
        try:
            os.remove(self.path)
        except FileNotFoundError:  # reclaimed meanwhile
            pass

    def acquire(self) -> None:
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        self._take_over_dead_holder()
        try:
            self._lock.acquire()
        except filelock.Timeout:
            pid, host = self._owner()
            holder = f'pid {pid} on {host or "unknown host"}' \
                if pid is not None else 'holder unknown'
            raise WorkDirBusyError(
                f"work_dir '{osp.dirname(self.path)}' is in use by "
                f"another run ({holder}, lock file '{self.path}'): two "
                "runs in one work_dir overwrite each other's checkpoints. "
                'Use another --work-dir, or wait for that run to end '
                '(delete the lock file only if you are sure it is not '
                'running).') from None

    def release(self) -> None:
        if self.held:
            self._lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
