"""Non-finite predictions (a diverging run) caught before the matching.

When training diverges (e.g. a far too large learning rate), the weights
stay finite for a step or two but the next forward pass overflows: the
decoder's logits and boxes become inf/NaN. The Hungarian matcher (scipy)
would then fail with "matrix contains invalid numeric entries", naming
neither the stage nor the iteration, and before any loss exists for
``NonFiniteCheckOptimWrapper`` to see. :func:`check_finite_predictions`
looks at every stage's outputs first and raises
:class:`NonFinitePredictionError` naming the first bad stage.

Who handles it: by default the error ends the run. Inside
:func:`report_non_finite_predictions` (entered by
``NonFiniteCheckOptimWrapper.optim_context`` around the forward pass) the
decoder's loss instead records the error there and returns the NaN loss
:data:`NON_FINITE_PREDICTIONS_KEY`, so that the optim wrapper applies its
stop/skip policy with this message (see
``lors_det/engine/optim_wrappers/non_finite_check_optim_wrapper.py``).
"""
import contextvars
from contextlib import contextmanager
from typing import Iterator, List, Sequence, Tuple

import torch
from mmdet.utils import reduce_mean


class NonFinitePredictionError(FloatingPointError):
    """A decoder stage predicted NaN/inf logits or boxes (``stage``: the
    first such stage, 0-based as in the loss names ``s{stage}.*``)."""

    def __init__(self, message: str, stage: int):
        super().__init__(message)
        self.stage = stage


#: the loss term the decoder returns for non-finite predictions (NaN)
NON_FINITE_PREDICTIONS_KEY = 'loss_non_finite_predictions'

_reports: contextvars.ContextVar = contextvars.ContextVar(
    'non_finite_prediction_reports', default=None)


@contextmanager
def report_non_finite_predictions(
) -> Iterator[List['NonFinitePredictionError']]:
    """Within this context a loss that finds non-finite predictions
    appends its :class:`NonFinitePredictionError` to the yielded list and
    returns :data:`NON_FINITE_PREDICTIONS_KEY` (NaN) instead of raising
    (:func:`report_or_raise`)."""
    reports: List[NonFinitePredictionError] = []
    token = _reports.set(reports)
    try:
        yield reports
    finally:
        _reports.reset(token)


def report_or_raise(error: 'NonFinitePredictionError') -> None:
    """Record ``error`` for :func:`report_non_finite_predictions`, or raise
    it when no caller handles it."""
    reports = _reports.get()
    if reports is None:
        raise error
    reports.append(error)


def check_finite_predictions(
        outputs: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Raise :class:`NonFinitePredictionError` unless every stage's outputs
    are finite.

    Args:
        outputs (list[tuple[Tensor, Tensor]]): per stage, cls logits
            (B, N, K) and boxes (B, N, 4), as ``AdaMixerDecoder.forward``
            returns them.

    In distributed training the ranks agree (one all-reduce of the flags,
    as the losses' ``reduce_mean``): all raise when any rank has a
    non-finite prediction, so that no rank waits in a collective of the
    matching or the loss that the others skip. One host sync per call.
    """
    names = ('cls logits', 'boxes')
    local = torch.stack([
        ~torch.isfinite(t).all() for stage in outputs for t in stage
    ]).float()  # (num_stages * 2,) 1: not finite on this rank
    flags = torch.cat([local, reduce_mean(local)]).tolist()
    num = len(local)
    local, any_rank = flags[:num], flags[num:]
    if not any(any_rank):
        return
    bad_stages = sorted({i // 2 for i, f in enumerate(any_rank) if f})
    stage = bad_stages[0]
    what = ' and '.join(n for n, f in zip(names, any_rank[2 * stage:]) if f)
    where = '' if any(local[2 * stage:2 * stage + 2]) else \
        ' on another rank'
    later = f' (also stages {bad_stages[1:]})' if len(bad_stages) > 1 \
        else ''
    raise NonFinitePredictionError(
        f'decoder stage {stage} (loss terms s{stage}.*) predicted '
        f'non-finite {what}{where}{later} before the Hungarian matching: '
        'the training has diverged (learning rate too high?) or the input '
        'is not finite', stage)
