"""An ``OptimWrapper`` that never applies a step from a non-finite loss.

Why an optim wrapper (and not a hook)
-------------------------------------
mmengine's ``train_step`` is ``losses = model(mode='loss')``,
``loss, log_vars = model.parse_losses(losses)``,
``optim_wrapper.update_params(loss)``, and only then do hooks see the
outputs (``after_train_iter``): by then a NaN has already gone through
``backward()`` and ``optimizer.step()`` into the weights and the optimizer
state (Adam moments), irreversibly. ``update_params`` is the last point
before the step is applied, so the check lives there:

1. before ``backward``: the total loss must be finite; otherwise the loss
   terms that are not finite are named (``s1.loss_bbox=nan``), with the
   iteration;
2. after ``backward``, before ``step`` (``check_grads=True``): every
   gradient must be finite (a finite loss can still give NaN/inf gradients,
   e.g. through a sqrt at 0); otherwise the first parameters with
   non-finite gradients are named.

To name the loss terms the wrapper needs the per-term losses, which
``update_params`` does not receive. In ``optim_context(model)`` (entered by
``train_step`` with the model) the wrapper therefore wraps the model's
``parse_losses`` once, as a bound method on the model instance, to keep the
last ``log_vars`` it returned; the model class is not changed.

What happens then (``on_non_finite``):

* ``'stop'`` (default): a :class:`NonFiniteLossError` is raised (and the
  message logged): the step is not applied, the run ends with a non-zero
  exit code, and the last checkpoint is the one to resume from.
* ``'skip'``: the gradients of this step are discarded (no ``backward`` for
  a non-finite loss, ``zero_grad`` for non-finite gradients), the optimizer
  step is not applied (weights and optimizer state unchanged), a warning
  names the terms and the iteration, and training goes on. The number of
  skipped steps is kept in the message hub's runtime info
  (``non_finite_skips``, saved in checkpoints). More than
  ``max_consecutive_skips`` skips in a row raise :class:`NonFiniteLossError`
  (a run that only produces NaN must not spin silently), and so does a skip
  after which a floating-point buffer of the model (BatchNorm running
  statistics, updated by the forward pass) is non-finite: skipping the step
  cannot repair those. Parameter
  schedulers still advance on a skipped iteration. With gradient
  accumulation a skip discards the gradients accumulated so far in the
  window.

In distributed training all ranks agree (one all-reduce of a flag per step)
so that they skip or stop together instead of deadlocking in the gradient
all-reduce of ranks that went on.

Usage::

    optim_wrapper = dict(
        type='NonFiniteCheckOptimWrapper',
        on_non_finite='stop',      # or 'skip'
        optimizer=dict(type='AdamW', lr=2.5e-5, weight_decay=1e-4),
        clip_grad=dict(max_norm=1.0, norm_type=2))

``tools/train.py --amp`` replaces the wrapper type with ``AmpOptimWrapper``
(whose grad scaler skips steps with inf/NaN gradients itself, but not
non-finite losses).
"""
import logging
import math
import types
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from mmdet.registry import OPTIM_WRAPPERS
from mmengine.logging import MessageHub, print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient was NaN or infinite (message: which, and when)."""


def _recording_parse_losses(module, losses):
    """``parse_losses`` of the module's class, keeping its ``log_vars``."""
    loss, log_vars = type(module).parse_losses(module, losses)
    module._last_log_vars = log_vars
    return loss, log_vars


def _fmt(value) -> str:
    try:
        v = float(value.detach().float().mean()) if torch.is_tensor(
            value) else float(value)
    except Exception:
        return repr(value)
    return repr(v) if math.isfinite(v) else str(v)


@OPTIM_WRAPPERS.register_module()
class NonFiniteCheckOptimWrapper(OptimWrapper):
    """:class:`mmengine.optim.OptimWrapper` that checks losses (and
    gradients) for NaN/inf before the step is applied.

    Args:
        on_non_finite (str): ``'stop'`` (raise :class:`NonFiniteLossError`)
            or ``'skip'`` (skip the step with a warning). Defaults to
            ``'stop'``.
        check_grads (bool): also check the gradients before each optimizer
            step. Defaults to True.
        max_consecutive_skips (int): with ``'skip'``, stop after this many
            skipped steps in a row. Defaults to 10.
        **kwargs: :class:`mmengine.optim.OptimWrapper` arguments
            (``optimizer``, ``clip_grad``, ``accumulative_counts``).
    """

    def __init__(self,
                 *args,
                 on_non_finite: str = 'stop',
                 check_grads: bool = True,
                 max_consecutive_skips: int = 10,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if on_non_finite not in ('stop', 'skip'):
            raise ValueError(
                "optim_wrapper.on_non_finite must be 'stop' or 'skip', got "
                f'{on_non_finite!r}')
        if isinstance(max_consecutive_skips, bool) or not isinstance(
                max_consecutive_skips, int) or max_consecutive_skips < 1:
            raise ValueError(
                'optim_wrapper.max_consecutive_skips must be a positive '
                f'integer, got {max_consecutive_skips!r}')
        self.on_non_finite = on_non_finite
        self.check_grads = bool(check_grads)
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self._module: Optional[torch.nn.Module] = None

    # -- model hook-up -------------------------------------------------------
    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        self._watch(model)
        with super().optim_context(model):
            yield

    def _watch(self, model: torch.nn.Module) -> None:
        module = model.module if is_model_wrapper(model) else model
        self._module = module
        current = module.__dict__.get('parse_losses')
        if getattr(current, '__func__', None) is not _recording_parse_losses:
            module.parse_losses = types.MethodType(_recording_parse_losses,
                                                   module)

    # -- the check -----------------------------------------------------------
    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        step_kwargs = step_kwargs or {}
        zero_kwargs = zero_kwargs or {}
        if self._any_rank(not bool(torch.isfinite(loss).all())):
            self._non_finite('loss', self._loss_details(loss))
            self._inner_count += 1  # this micro-step is consumed
            self.zero_grad(**zero_kwargs)
            return
        loss = self.scale_loss(loss)
        self.backward(loss)
        if self.should_update():
            if self.check_grads:
                bad = self._non_finite_grads()
                if self._any_rank(bool(bad)):
                    self._non_finite('gradient', self._grad_details(bad))
                    self.zero_grad(**zero_kwargs)
                    return
            self.step(**step_kwargs)
            self.zero_grad(**zero_kwargs)
        self.consecutive_skips = 0

    @staticmethod
    def _any_rank(flag: bool) -> bool:
        if dist.is_available() and dist.is_initialized() and \
                dist.get_world_size() > 1:
            t = torch.tensor([1.0 if flag else 0.0])
            if dist.get_backend() == 'nccl':
                t = t.cuda()
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return bool(t.item() > 0)
        return flag

    def _loss_details(self, loss: torch.Tensor) -> str:
        log_vars = getattr(self._module, '_last_log_vars', None) or {}
        bad = [
            f'{k}={_fmt(v)}' for k, v in log_vars.items()
            if k != 'loss' and torch.is_tensor(v)
            and not bool(torch.isfinite(v).all())
        ]
        total = f'total loss={_fmt(loss)}'
        if bad:
            return f"{', '.join(bad)} ({total})"
        if log_vars and bool(torch.isfinite(loss).all()):
            return f'{total} on this rank; the non-finite loss was on ' \
                'another rank'
        return total

    def _non_finite_grads(self) -> List[torch.Tensor]:
        params = [
            p for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]
        if not params:
            return []
        finite = torch.stack([torch.isfinite(p.grad).all() for p in params])
        if bool(finite.all()):
            return []
        return [p for p, ok in zip(params, finite.tolist()) if not ok]

    def _grad_details(self, bad: List[torch.Tensor]) -> str:
        names = {}
        if self._module is not None:
            names = {id(p): n for n, p in self._module.named_parameters()}
        listed = [names.get(id(p), f'<param {tuple(p.shape)}>')
                  for p in bad[:5]]
        more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
        return ('non-finite gradients in ' + ', '.join(listed) + more +
                ' (the loss itself was finite)')

    def _non_finite_buffers(self) -> List[str]:
        if self._module is None:
            return []
        bad = [
            n for n, b in self._module.named_buffers()
            if b.is_floating_point() and not bool(torch.isfinite(b).all())
        ]
        return bad[:5] + ([f'... ({len(bad) - 5} more)']
                          if len(bad) > 5 else [])

    def _non_finite(self, what: str, details: str) -> None:
        hub = MessageHub.get_current_instance()
        it = hub.get_info('iter')  # runner.iter, 0-based
        # 1-based and global, as `iter` in vis_data/scalars.json and
        # `Iter(train) [k/N]` in the log
        where = f'iteration {it + 1}' if isinstance(it, int) else \
            'an iteration'
        head = f'Non-finite {what} at train {where}: {details}.'
        if self.on_non_finite == 'stop':
            last = hub.get_info('last_ckpt')
            msg = (f'{head} The optimizer step was NOT applied. Stopping '
                   "(optim_wrapper.on_non_finite='stop'; set it to 'skip' "
                   'to skip such steps).' +
                   (f' Last checkpoint: {last}' if last else ''))
            print_log(msg, logger='current', level=logging.ERROR)
            raise NonFiniteLossError(msg)
        poisoned = self._non_finite_buffers()
        if poisoned:
            msg = (f'{head} The buffers {poisoned} became non-finite in the '
                   'forward pass (e.g. BatchNorm running statistics); '
                   'skipping the optimizer step cannot undo that. Stopping.')
            print_log(msg, logger='current', level=logging.ERROR)
            raise NonFiniteLossError(msg)
        self.consecutive_skips += 1
        total = (hub.get_info('non_finite_skips') or 0) + 1
        hub.update_info('non_finite_skips', total)
        msg = (f'{head} Skipped this optimizer step (weights unchanged; '
               f'{total} skipped so far, {self.consecutive_skips} in a row).')
        if self.consecutive_skips > self.max_consecutive_skips:
            msg += (f' More than optim_wrapper.max_consecutive_skips='
                    f'{self.max_consecutive_skips} skips in a row: stopping.')
            print_log(msg, logger='current', level=logging.ERROR)
            raise NonFiniteLossError(msg)
        print_log(msg, logger='current', level=logging.WARNING)
