"""Choosing the checkpoint to resume from, so that a run never restarts
over existing work.

mmengine's auto-resume reads ``<work_dir>/last_checkpoint``; when that file
is missing it logs "resumed from None", starts at iteration 0 and then
overwrites ``iter_N.pth`` one by one. Here:

* :func:`find_resume_checkpoint` takes the newest checkpoint of the work_dir
  that loads (``epoch_N.pth``/``iter_N.pth`` by N, and the file named by
  ``last_checkpoint``), says which and why when ``last_checkpoint`` is
  missing, empty or names a file that is gone, damaged or older; it raises
  when there are checkpoints but none loads. A ``last_checkpoint`` that
  names a file outside the work_dir while the work_dir holds checkpoints of
  its own (a copied work_dir: ``cp -r WD WD2`` keeps WD's absolute path) is
  not followed: the work_dir's own checkpoints are used, and the log says
  so. With no checkpoint of its own (the checkpoint hook's ``out_dir`` is
  elsewhere) the named file is used, and the log says where it is.
* :func:`refuse_fresh_start` stops a run without ``--resume`` in a work_dir
  that already holds checkpoints.
"""
import glob
import os.path as osp
import re
from typing import Callable, List, Optional, Tuple

from .checkpoint import CheckpointError, load_checkpoint_file

__all__ = [
    'numbered_checkpoints', 'find_resume_checkpoint', 'refuse_fresh_start',
    'ResumeError'
]

_NUMBERED = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


class ResumeError(RuntimeError):
    """No checkpoint to resume from although some exist, or a fresh start
    would overwrite them."""


def numbered_checkpoints(work_dir: str) -> List[str]:
    """``epoch_N.pth``/``iter_N.pth`` in ``work_dir``, newest (largest N)
    first."""
    found = []
    for path in glob.glob(osp.join(glob.escape(work_dir), '*.pth')):
        m = _NUMBERED.match(osp.basename(path))
        if m and osp.isfile(path):
            found.append((int(m.group(2)), osp.getmtime(path), path))
    return [p for _, _, p in sorted(found, reverse=True)]


def _pointer(work_dir: str) -> Tuple[Optional[str], str]:
    """(checkpoint named by last_checkpoint, why it is not usable or '')."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None, f"'{pointer}' does not exist"
    with open(pointer) as f:
        target = f.read().strip()
    if not target:
        return None, f"'{pointer}' is empty"
    if not osp.isfile(target):
        return None, f"'{pointer}' names '{target}', which does not exist"
    return target, ''


def _inside(path: str, work_dir: str) -> bool:
    return osp.realpath(osp.dirname(osp.abspath(path))) == \
        osp.realpath(work_dir)


def _foreign_pointer(work_dir: str, target: str, own: List[str],
                     log: Callable[[str], None]) -> Optional[str]:
    """The checkpoint to use for a ``last_checkpoint`` that names ``target``
    outside ``work_dir``: the file of the same name in ``work_dir`` (None if
    there is none) when ``work_dir`` has checkpoints of its own, else
    ``target``."""
    if not own:
        log(f"last_checkpoint names '{target}', outside the work_dir "
            f"'{work_dir}' (the checkpoint hook's out_dir?), and the work_dir "
            'holds no checkpoint of its own: resuming from that file')
        return target
    log(f"last_checkpoint names '{target}', outside the work_dir "
        f"'{work_dir}' (a copied or moved work_dir?): not followed, "
        "resuming from the work_dir's own checkpoints")
    same = osp.join(work_dir, osp.basename(target))
    return same if osp.isfile(same) else None


def find_resume_checkpoint(
        work_dir: str,
        log: Callable[[str], None] = print) -> Tuple[Optional[str], object]:
    """The checkpoint to resume from and its loaded content.

    Returns:
        ``(path, checkpoint)``, or ``(None, None)`` when ``work_dir`` holds
        no checkpoint at all (a fresh start loses nothing).

    Raises:
        ResumeError: checkpoints exist but none loads (each named with its
            error).
    """
    target, why = _pointer(work_dir)
    candidates = numbered_checkpoints(work_dir)
    foreign = None  # a pointer target outside work_dir, not followed
    if target is not None and not _inside(target, work_dir):
        followed = _foreign_pointer(work_dir, target, candidates, log)
        if followed != target:
            foreign, target = target, followed
            why = f"last_checkpoint names '{foreign}', outside the work_dir"
    if target is not None and all(not osp.samefile(target, c)
                                  for c in candidates):
        candidates.insert(0, target)  # e.g. a checkpoint in another out_dir
    errors = []
    for path in candidates:
        try:
            checkpoint = load_checkpoint_file(path)
        except (CheckpointError, OSError) as e:
            errors.append(f'  {path}: {e}')
            continue
        if target is None:
            log(f'resuming from {path}, the newest checkpoint that loads '
                f'({why})')
        elif not osp.samefile(path, target):
            log(f'resuming from {path}, the newest checkpoint that loads, '
                f"not '{target}' named by last_checkpoint")
        else:
            log(f'resuming from {path}')
        for line in errors:
            log(f'skipped a checkpoint that does not load:\n{line}')
        return path, checkpoint
    if errors:
        raise ResumeError(
            f"cannot resume in '{work_dir}': none of its checkpoints loads "
            '(starting from scratch would overwrite them):\n' +
            '\n'.join(errors) +
            (f"\nlast_checkpoint names '{foreign}' outside this work_dir; "
             f'pass --resume {foreign} to continue from that file'
             if foreign else ''))
    return None, None


def refuse_fresh_start(work_dir: str) -> None:
    """Raise :class:`ResumeError` if ``work_dir`` has checkpoints: a run
    started from iteration 0 there would overwrite them."""
    existing = numbered_checkpoints(work_dir)
    if existing:
        names = ', '.join(osp.basename(p) for p in existing[:3])
        raise ResumeError(
            f"work_dir '{work_dir}' already holds checkpoints ({names}"
            f"{', ...' if len(existing) > 3 else ''}); a new run from "
            'iteration 0 would overwrite them. Pass --resume to continue '
            'that run, or choose another --work-dir.')
