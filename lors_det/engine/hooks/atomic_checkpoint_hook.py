"""A ``CheckpointHook`` whose saves never destroy the last good checkpoint.

What mmengine 0.10.7's ``CheckpointHook`` does, and what can go wrong:

* ``Runner.save_checkpoint`` -> ``mmengine.runner.checkpoint.save_checkpoint``
  serialises into memory and ``LocalBackend.put``-s the bytes with
  ``open(path, 'wb').write(...)``: a kill, a node preemption or a full disk
  during that write leaves a truncated file under the final name
  (``iter_N.pth``), indistinguishable by name from a good one;
* with ``max_keep_ckpts`` the oldest kept checkpoint is deleted *before* the
  new one is written, so with ``max_keep_ckpts=1`` a failed save leaves no
  usable checkpoint at all;
* the ``last_checkpoint`` pointer (used by ``--resume``) is rewritten in
  place (truncate, then write);
* with ``save_best`` the previous best checkpoint is deleted before the new
  best is written.

:class:`AtomicCheckpointHook` keeps mmengine's behaviour and options and
changes only the order and the way files are written:

1. every checkpoint file is written through the ``'atomic_local'`` file
   backend (:class:`lors_det.engine.fileio.AtomicLocalBackend`):
   ``<name>.<pid>.partial`` in the same directory, after a check that the
   disk has room for it, fsync, ``os.replace`` onto the
   final name, fsync of the directory; a checkpoint name therefore always
   holds a complete file;
2. then ``last_checkpoint`` is rewritten atomically the same way;
3. only then are outdated checkpoints (``max_keep_ckpts``) and the previous
   best checkpoint deleted.

A ``<name>.<pid>.partial`` left by a killed save is deleted in
``before_train`` when no process with that pid runs (a live one is another
run writing into this work_dir: it is left alone, with a warning).
For a non-local ``out_dir`` (``s3://``, ... or explicit
``backend_args``/``file_client_args``) the storage backend writes as it
always does (object stores replace objects atomically anyway); the
save-then-prune order still applies.
"""
import glob
import os
import os.path as osp

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from ..fileio import (PARTIAL_SUFFIX, AtomicLocalBackend, atomic_write_text,
                      partial_owner, pid_alive)


class _DeferRemovals:
    """Proxy of a file backend that records ``remove``/``rmtree`` calls
    instead of running them (everything else is passed through)."""

    def __init__(self, backend):
        self._backend = backend
        self.pending = []

    def remove(self, path):
        self.pending.append(('remove', path))

    def rmtree(self, path):
        self.pending.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic checkpoint writes and save-then-prune
    order. Same arguments as :class:`mmengine.hooks.CheckpointHook`.

    Example::

        default_hooks = dict(
            checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                            max_keep_ckpts=3))
    """

    def __init__(self,
                 *args,
                 backend_args=None,
                 file_client_args=None,
                 **kwargs):
        super().__init__(
            *args,
            backend_args=backend_args,
            file_client_args=file_client_args,
            **kwargs)
        # atomic writes unless the user chose a storage backend explicitly
        self._want_atomic = backend_args is None and file_client_args is None
        self._atomic = False

    # -- setup ---------------------------------------------------------------
    def before_train(self, runner) -> None:
        out_dir = self.out_dir if self.out_dir is not None else \
            runner.work_dir
        if self._want_atomic and '://' not in str(out_dir):
            self.backend_args = dict(backend='atomic_local')
        super().before_train(runner)
        self._atomic = isinstance(self.file_backend, AtomicLocalBackend)
        if not self._atomic:
            runner.logger.warning(
                'AtomicCheckpointHook: checkpoints go to a non-local '
                f'storage backend ({type(self.file_backend).__name__}); they '
                'are written by that backend, outdated ones are still '
                'deleted only after a new one was saved.')
        elif is_main_process():
            self._remove_partials(runner)

    def _remove_partials(self, runner) -> None:
        pattern = osp.join(
            glob.escape(str(self.out_dir)), '*' + PARTIAL_SUFFIX)
        for path in sorted(glob.glob(pattern)):
            owner = partial_owner(path)
            if owner is not None and pid_alive(owner):
                runner.logger.warning(
                    f'{path} is being written by process {owner}: another '
                    'run saves into this work_dir; left alone.')
                continue
            try:
                os.remove(path)
            except OSError:
                continue
            runner.logger.warning(
                f'Removed {path}: an incomplete checkpoint left by an '
                'interrupted save.')

    # -- saving --------------------------------------------------------------
    def _save_checkpoint_with_step(self, runner, step, meta):
        """mmengine's version, reordered: save, point, then prune."""
        backend = self.file_backend
        pending = _DeferRemovals(backend)
        self.file_backend = pending
        try:
            # mmengine's bookkeeping (keep_ckpt_ids, last_ckpt in the
            # message hub) and the save; deletions are only recorded
            self._save_and_point(runner, step, meta)
        finally:
            self.file_backend = backend
        if is_main_process():
            self._run_removals(runner, pending.pending)

    def _save_and_point(self, runner, step, meta):
        # Same as CheckpointHook._save_checkpoint_with_step (mmengine
        # 0.10.7) except that `last_checkpoint` is written atomically.
        if self.max_keep_ckpts > 0:
            if len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step:
                pass
            else:
                if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                    _step = self.keep_ckpt_ids.popleft()
                    if is_main_process():
                        ckpt_path = self.file_backend.join_path(
                            self.out_dir, self.filename_tmpl.format(_step))
                        if self.file_backend.isfile(ckpt_path):
                            self.file_backend.remove(ckpt_path)
                        elif self.file_backend.isdir(ckpt_path):
                            self.file_backend.rmtree(ckpt_path)
                self.keep_ckpt_ids.append(step)
                runner.message_hub.update_info('keep_ckpt_ids',
                                               list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        atomic_write_text(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's version with the previous best deleted only after the
        new best (and the regular checkpoint it triggers) are written."""
        backend = self.file_backend
        pending = _DeferRemovals(backend)
        self.file_backend = pending
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        if is_main_process():
            self._run_removals(runner, pending.pending)

    def _run_removals(self, runner, removals) -> None:
        # never delete a file that was just (re)written under the same name
        current = {self.last_ckpt, getattr(self, 'best_ckpt_path', None)}
        current.update(getattr(self, 'best_ckpt_path_dict', {}).values())
        for kind, path in removals:
            if path in current:
                continue
            if kind == 'remove' and self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif kind == 'rmtree' and self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
