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
``train_step`` around the forward pass) it keeps the loss dict of that
forward pass with a PyTorch forward hook on the model, removed when the
context exits; the model is not changed.

Non-finite predictions (a diverging run)
----------------------------------------
A run that diverges (e.g. ``optimizer.lr=1e30``) has finite weights for a
step, then a forward pass that overflows: the decoder's logits and boxes
are inf/NaN, and the Hungarian matching would fail on them before any loss
exists. The decoder therefore checks every stage's predictions before the
matching (:mod:`lors_det.models.roi_heads.non_finite`, all ranks
together). ``optim_context`` enters
:func:`~lors_det.models.roi_heads.non_finite.report_non_finite_predictions`
around the forward pass, so the decoder's loss reports the
:class:`~lors_det.models.NonFinitePredictionError` (naming the first bad
stage) there and returns the NaN loss ``loss_non_finite_predictions``
instead of raising. From there it is a non-finite loss like any other: the
same ``stop``/``skip`` policy, skip counting, ``max_consecutive_skips``,
buffer check and distributed agreement, with the message ``Non-finite
predictions at train iteration k: decoder stage s ...``. Without this
wrapper the decoder's error ends the run naming the stage.

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
        # checks optimizer.lr before torch builds the optimizer
        constructor='CheckedOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=2.5e-5, weight_decay=1e-4),
        clip_grad=dict(max_norm=1.0, norm_type=2))

The learning rate must be a positive finite number
(``optim_wrapper.optimizer.lr``): checked by the wrapper on the built
optimizer and, with ``CheckedOptimWrapperConstructor``, on the config
before torch builds the optimizer (torch's own check fails on ``'fast'``
with "'<=' not supported", naming nothing).

``tools/train.py --amp`` turns this wrapper into
:class:`NonFiniteCheckAmpOptimWrapper` (:func:`to_amp`),
mmengine's ``AmpOptimWrapper`` with the same options and checks of losses
and predictions; its gradients are checked by the grad scaler, which skips
steps with inf/NaN gradients itself (and lowers the loss scale), so
``check_grads`` does not apply there. Other wrapper types become
``AmpOptimWrapper``, as in mmdet's tools.
"""
import logging
import math
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS
from mmengine.logging import MessageHub, print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import (AmpOptimWrapper, DefaultOptimWrapperConstructor,
                            OptimWrapper)

from ...lors.checks import check_bool, check_number, first_few
from ...models.roi_heads.non_finite import report_non_finite_predictions


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient was NaN or infinite (message: which, and when)."""


def check_learning_rate(lr) -> None:
    """``optim_wrapper.optimizer.lr`` must be a positive finite number."""
    if torch.is_tensor(lr) and lr.numel() == 1:
        lr = lr.item()
    check_number('optim_wrapper.optimizer.lr', lr, positive=True)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class CheckedOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, which first checks
    ``optimizer.lr`` (positive finite number) so that a wrong value is
    named before torch builds the optimizer."""

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if 'lr' in self.optimizer_cfg:
            check_learning_rate(self.optimizer_cfg['lr'])


def _fmt(value) -> str:
    try:
        v = float(value.detach().float().mean()) if torch.is_tensor(
            value) else float(value)
    except Exception:
        return repr(value)
    return repr(v) if math.isfinite(v) else str(v)


class NonFiniteCheck:
    """The checks of losses, predictions (and gradients) for NaN/inf before
    the step is applied, on an mmengine optim wrapper class (see the module
    docstring).

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
        lr = self.optimizer.defaults.get('lr')
        if lr is not None:
            check_learning_rate(lr)
        self.on_non_finite = on_non_finite
        self.check_grads = check_bool('optim_wrapper.check_grads', check_grads)
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self._module: Optional[torch.nn.Module] = None
        self._losses: Dict = {}
        self._predictions: List = []

    #: whether the gradients are checked here (not by a grad scaler)
    checks_grads_itself = True

    # -- model hook-up -------------------------------------------------------
    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        """The forward pass of ``train_step``: its loss dict is kept (a
        forward hook) and non-finite predictions are reported here."""
        self._module = model.module if is_model_wrapper(model) else model
        self._losses = {}
        handle = self._module.register_forward_hook(self._keep_losses)
        try:
            with report_non_finite_predictions() as self._predictions, \
                    super().optim_context(model):
                yield
        finally:
            handle.remove()

    def _keep_losses(self, module, args, output) -> None:
        # detached: a skipped step must not keep the graph alive
        if isinstance(output, dict):
            self._losses = {
                k: [t.detach() for t in v] if isinstance(v, (list, tuple)) else
                v.detach() if torch.is_tensor(v) else v
                for k, v in output.items()
            }

    # -- the check -----------------------------------------------------------
    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        step_kwargs = step_kwargs or {}
        zero_kwargs = zero_kwargs or {}
        if self._any_rank(not bool(torch.isfinite(loss).all())):
            if self._predictions:
                self._non_finite('predictions', str(self._predictions[0]))
            else:
                self._non_finite('loss', self._loss_details(loss))
            self._inner_count += 1  # this micro-step is consumed
            self.zero_grad(**zero_kwargs)
            return
        loss = self.scale_loss(loss)
        self.backward(loss)
        if self.should_update():
            if self.check_grads and self.checks_grads_itself:
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
        terms = {
            k:
            torch.stack([t.float().mean()
                         for t in v]).sum() if isinstance(v,
                                                          (list, tuple)) else v
            for k, v in self._losses.items() if 'loss' in k
        }
        bad = [
            f'{k}={_fmt(v)}' for k, v in terms.items()
            if torch.is_tensor(v) and not bool(torch.isfinite(v).all())
        ]
        total = f'total loss={_fmt(loss)}'
        if bad:
            return f"{', '.join(bad)} ({total})"
        if terms and bool(torch.isfinite(loss).all()):
            return f'{total} on this rank; the non-finite loss was on ' \
                'another rank'
        return total

    def _non_finite_grads(self) -> List[torch.Tensor]:
        params = [
            p for group in self.optimizer.param_groups for p in group['params']
            if p.grad is not None
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
        listed = [names.get(id(p), f'<param {tuple(p.shape)}>') for p in bad]
        return ('non-finite gradients in ' + first_few(listed) +
                ' (the loss itself was finite)')

    def _non_finite_buffers(self) -> List[str]:
        if self._module is None:
            return []
        bad = [
            n for n, b in self._module.named_buffers()
            if b.is_floating_point() and not bool(torch.isfinite(b).all())
        ]
        return bad

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
            msg = (f'{head} The buffers {first_few(poisoned)} became '
                   'non-finite in the '
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


@OPTIM_WRAPPERS.register_module()
class NonFiniteCheckOptimWrapper(NonFiniteCheck, OptimWrapper):
    """:class:`mmengine.optim.OptimWrapper` that checks losses (and
    gradients) for NaN/inf before the step is applied (options:
    :class:`NonFiniteCheck`)."""


@OPTIM_WRAPPERS.register_module()
class NonFiniteCheckAmpOptimWrapper(NonFiniteCheck, AmpOptimWrapper):
    """:class:`mmengine.optim.AmpOptimWrapper` with the same checks of
    losses and predictions (options: :class:`NonFiniteCheck`, plus
    ``loss_scale``, ``dtype``); gradients are left to the grad scaler,
    which skips steps with inf/NaN gradients."""

    checks_grads_itself = False


def to_amp(optim_wrapper: dict) -> None:
    """Make the config's ``optim_wrapper`` an AMP one, in place (``--amp``):
    the AMP variant of the guard for the guard (its options kept),
    mmengine's ``AmpOptimWrapper`` otherwise (as mmdet's tools); dynamic
    loss scale."""
    guards = ('NonFiniteCheckOptimWrapper', NonFiniteCheckOptimWrapper,
              'NonFiniteCheckAmpOptimWrapper', NonFiniteCheckAmpOptimWrapper)
    optim_wrapper['type'] = 'NonFiniteCheckAmpOptimWrapper' if \
        optim_wrapper.get('type') in guards else 'AmpOptimWrapper'
    optim_wrapper['loss_scale'] = 'dynamic'
