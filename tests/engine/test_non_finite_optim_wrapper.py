"""Non-finite losses are never silently propagated.

With ``optim_wrapper.type='NonFiniteCheckOptimWrapper'`` a NaN loss term,
injected by a test-only AdaMixer subclass at a chosen iteration of a real
training run (mmengine Runner, the tiny AdaMixer config), either stops the
run with a message naming the loss term and the iteration (default), or
(``on_non_finite='skip'``) skips that optimizer step: parameters and
optimizer state are exactly those before the step. A diverging run
(``lr=1e30``) and NaN logits forced into one decoder stage are caught before
the Hungarian matching and handled by the same policy, naming the stage.
Unit tests on a toy model cover NaN gradients, the consecutive-skip limit,
poisoned BatchNorm statistics and option validation.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
import torch.nn as nn
from helpers import (CKPT_INTERVAL, SYNTHETIC, build_model, losses_by_run,
                     make_batch)
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner

from lors_det.engine import NonFiniteCheckOptimWrapper, NonFiniteLossError
from lors_det.models.detectors.adamixer import AdaMixer

NAN_KEY = 's1.loss_bbox'


@MODELS.register_module(force=True)
class NaNInjectAdaMixer(AdaMixer):
    """Test only: loss term ``nan_key`` is NaN at the 1-based iterations
    ``nan_at``."""

    def __init__(self, *args, nan_at=(), nan_key=NAN_KEY, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_at, self.nan_key = tuple(nan_at), nan_key

    def loss(self, batch_inputs, batch_data_samples):
        losses = super().loss(batch_inputs, batch_data_samples)
        it = MessageHub.get_current_instance().get_info('iter')
        if it is not None and it + 1 in self.nan_at:
            losses[self.nan_key] = losses[self.nan_key] * float('nan')
        return losses


class Snapshot(Hook):
    """Parameters and optimizer state before/after every iteration."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def _take(runner):
        params = {
            n: p.detach().clone()
            for n, p in runner.model.named_parameters()
        }
        state = copy.deepcopy(
            runner.optim_wrapper.optimizer.state_dict()['state'])
        return params, state

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.before[runner.iter + 1] = self._take(runner)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.after[runner.iter + 1] = self._take(runner)


def _runner(tiny_config,
            work_dir,
            nan_at,
            on_non_finite,
            max_iters=3,
            hooks=(),
            lr=None,
            **wrapper_options):
    cfg = Config.fromfile(tiny_config)
    cfg.model.type = 'NaNInjectAdaMixer'
    cfg.model.nan_at = list(nan_at)
    cfg.optim_wrapper.type = 'NonFiniteCheckOptimWrapper'
    cfg.optim_wrapper.on_non_finite = on_non_finite
    cfg.optim_wrapper.update(wrapper_options)
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    cfg.train_cfg.max_iters = max_iters
    cfg.randomness = dict(seed=0)  # no global deterministic mode in-process
    cfg.work_dir = str(work_dir)
    name = f'nonfinite_{osp.basename(str(work_dir))}'
    cfg.experiment_name = name
    cfg.visualizer.name = name  # a fresh visualizer (it is a singleton)
    runner = Runner.from_cfg(cfg)
    for hook in hooks:  # objects, not config dicts: register them directly
        runner.register_hook(hook)
    return runner


def _log_text(work_dir):
    logs = glob.glob(osp.join(str(work_dir), '*', '*.log'))
    assert logs
    return open(logs[0]).read()


def _assert_tensors_equal(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _assert_tensors_equal(a[k], b[k], f'{what}/{k}')
        elif torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), f'{what}/{k}'
        else:
            assert a[k] == b[k], f'{what}/{k}'


def test_nan_loss_stops_the_run_naming_key_and_iteration(
        tiny_config, tmp_path):
    nan_iter = CKPT_INTERVAL + 1
    runner = _runner(tiny_config, tmp_path, [nan_iter], 'stop')
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert f'Non-finite loss at train iteration {nan_iter}' in msg
    assert f'{NAN_KEY}=nan' in msg
    assert 'NOT applied' in msg
    assert osp.join(str(tmp_path), f'iter_{CKPT_INTERVAL}.pth') in msg
    # only the NaN term is reported, not the healthy ones
    assert 's0.loss_bbox' not in msg and 's1.loss_cls' not in msg
    # the message is in the run's log file, and no iteration after the NaN
    # was logged
    assert f'{NAN_KEY}=nan' in _log_text(tmp_path)
    assert sorted(losses_by_run(str(tmp_path))[0]) == list(range(1, nan_iter))


def test_skip_option_leaves_weights_unchanged_for_that_step(
        tiny_config, tmp_path):
    snap = Snapshot()
    nan_iter = 2
    runner = _runner(tiny_config, tmp_path, [nan_iter], 'skip', hooks=[snap])
    runner.train()  # completes
    # the NaN step: parameters and optimizer state exactly unchanged
    p0, s0 = snap.before[nan_iter]
    p1, s1 = snap.after[nan_iter]
    _assert_tensors_equal(p0, p1, 'params')
    _assert_tensors_equal(s0, s1, 'optimizer state')
    # the other steps did update the weights
    for it in (1, 3):
        pa, _ = snap.before[it]
        pb, _ = snap.after[it]
        assert any(not torch.equal(pa[k], pb[k]) for k in pa), it
        assert all(torch.isfinite(v).all() for v in pb.values())
    log = _log_text(tmp_path)
    assert f'Non-finite loss at train iteration {nan_iter}: {NAN_KEY}=nan' \
        in log
    assert 'Skipped this optimizer step' in log
    assert runner.message_hub.get_info('non_finite_skips') == 1


# ---------------------------------------------------------------------------
# non-finite predictions (divergence): caught before the Hungarian matching
# ---------------------------------------------------------------------------
class PoisonPredictions(Hook):
    """Test only: the cls logits of decoder stage ``stage`` are NaN at the
    1-based iterations ``at`` (a forward hook on its classifier)."""

    def __init__(self, stage, at):
        self.stage, self.at, self.handle = stage, set(at), None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 in self.at:
            fc_cls = runner.model.decoder.stages[self.stage].fc_cls
            self.handle = fc_cls.register_forward_hook(
                lambda module, args, out: out * float('nan'))

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def test_diverging_training_stops_naming_stage_and_iteration(
        tiny_config, tmp_path):
    # lr=1e30: the first step is finite (finite loss and gradients) but
    # blows the weights up, so the second forward pass gives non-finite
    # logits and boxes; without the check scipy's Hungarian matcher raised
    # "matrix contains invalid numeric entries", naming nothing
    runner = _runner(tiny_config, tmp_path, [], 'stop', lr=1e30)
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert 'Non-finite predictions at train iteration 2' in msg, msg
    assert 'decoder stage 0' in msg, msg
    assert 'before the Hungarian matching' in msg, msg
    assert 'NOT applied' in msg
    assert 'decoder stage 0' in _log_text(tmp_path)
    assert sorted(losses_by_run(str(tmp_path))[0]) == [1]


def test_non_finite_predictions_skip_leaves_weights_unchanged(
        tiny_config, tmp_path):
    snap = Snapshot()
    runner = _runner(
        tiny_config,
        tmp_path, [],
        'skip',
        hooks=[PoisonPredictions(stage=1, at=[2]), snap])
    runner.train()  # completes
    p0, s0 = snap.before[2]
    p1, s1 = snap.after[2]
    _assert_tensors_equal(p0, p1, 'params')
    _assert_tensors_equal(s0, s1, 'optimizer state')
    for it in (1, 3):
        pa, _ = snap.before[it]
        pb, _ = snap.after[it]
        assert any(not torch.equal(pa[k], pb[k]) for k in pa), it
    log = _log_text(tmp_path)
    assert 'Non-finite predictions at train iteration 2: decoder stage 1' \
        in log
    assert 'Skipped this optimizer step' in log
    assert runner.message_hub.get_info('non_finite_skips') == 1


def test_non_finite_prediction_skips_count_towards_the_limit(
        tiny_config, tmp_path):
    runner = _runner(
        tiny_config,
        tmp_path, [],
        'skip',
        max_iters=5,
        max_consecutive_skips=2,
        hooks=[PoisonPredictions(stage=0, at=[2, 3, 4])])
    with pytest.raises(
            NonFiniteLossError, match='max_consecutive_skips=2') as info:
        runner.train()
    assert 'Non-finite predictions at train iteration 4: decoder stage 0' \
        in str(info.value)
    assert runner.message_hub.get_info('non_finite_skips') == 3


def test_decoder_names_the_stage_and_the_tensor():
    from lors_det.models import NonFinitePredictionError
    torch.manual_seed(0)
    model = build_model(
        SYNTHETIC['adamixer'], num_stages=2, stage_loss_weights=[1.0, 1.0])
    model.decoder.stages[1].fc_reg.register_forward_hook(
        lambda module, args, out: out * float('inf'))
    inputs, samples = make_batch(num_gts=(2, 1))
    with pytest.raises(
            NonFinitePredictionError,
            match=r'decoder stage 1 .*boxes') as info:
        model.loss(inputs, samples)
    assert 'cls logits' not in str(info.value)
    # the optim wrapper's context: reported there, a NaN loss instead
    from lors_det.models.roi_heads.non_finite import (
        NON_FINITE_PREDICTIONS_KEY, report_non_finite_predictions)
    with report_non_finite_predictions() as reports:
        losses = model.loss(inputs, samples)
    assert list(losses) == [NON_FINITE_PREDICTIONS_KEY]
    assert torch.isnan(losses[NON_FINITE_PREDICTIONS_KEY])
    assert len(reports) == 1 and reports[0].stage == 1
    # finite predictions: the usual losses, nothing reported
    model.decoder.stages[1].fc_reg._forward_hooks.clear()
    with report_non_finite_predictions() as reports:
        losses = model.loss(inputs, samples)
    assert not reports and 's1.loss_bbox' in losses


# ---------------------------------------------------------------------------
# unit tests (toy model)
# ---------------------------------------------------------------------------
class Toy(BaseModel):

    def __init__(self, bn=False):
        super().__init__()
        self.bn = nn.BatchNorm1d(2) if bn else nn.Identity()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(self.bn(inputs))
        return dict(loss_mse=((out - 1)**2).mean(), acc=out.mean())


def _wrapper(model, **kwargs):
    return NonFiniteCheckOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def _data(value=None):
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    if value is not None:
        x[0, 0] = value
    return dict(inputs=x)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_nan_gradient_with_finite_loss_is_caught_naming_the_parameter():
    model = Toy()
    model.linear.weight.register_hook(lambda g: g * float('nan'))
    before = _params(model)
    with pytest.raises(
            NonFiniteLossError,
            match=r'non-finite gradients in linear\.weight'):
        model.train_step(_data(), _wrapper(model))
    _assert_tensors_equal(before, _params(model), 'params')


def test_the_model_instance_is_not_patched():
    """The wrapper keeps the losses with a forward hook it removes: nothing
    is set on the model instance (its forward/parse_losses are its
    class's)."""
    model = Toy()
    before = set(vars(model))
    with pytest.raises(NonFiniteLossError, match=r'loss_mse=nan'):
        model.train_step(_data(float('nan')), _wrapper(model))
    assert set(vars(model)) == before
    assert not model._forward_hooks


def test_skip_then_recover_and_consecutive_limit():
    model = Toy()
    ow = _wrapper(model, on_non_finite='skip', max_consecutive_skips=2)
    before = _params(model)
    ow.update_params(torch.tensor(float('inf'), requires_grad=True))
    _assert_tensors_equal(before, _params(model), 'params')
    model.train_step(_data(), ow)  # a good step resets the counter
    assert ow.consecutive_skips == 0
    assert any(not torch.equal(before[k], v)
               for k, v in _params(model).items())
    for _ in range(2):
        model.train_step(_data(float('nan')), ow)
    with pytest.raises(NonFiniteLossError, match='max_consecutive_skips=2'):
        model.train_step(_data(float('nan')), ow)


def test_skip_refuses_when_batchnorm_statistics_are_poisoned():
    model = Toy(bn=True)
    with pytest.raises(NonFiniteLossError, match=r'bn\.running_mean'):
        model.train_step(
            _data(float('nan')), _wrapper(model, on_non_finite='skip'))


def test_invalid_option_names_the_field():
    with pytest.raises(ValueError, match='on_non_finite'):
        _wrapper(Toy(), on_non_finite='ignore')
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        _wrapper(Toy(), max_consecutive_skips=0)


@pytest.mark.parametrize('value', ['no', 0, 1, None])
def test_check_grads_is_a_real_bool(value):
    """``check_grads='no'`` used to count as True (``bool('no')``)."""
    with pytest.raises(
            ValueError,
            match=r"optim_wrapper.check_grads must be True or "
            r"False, got .*\("):
        _wrapper(Toy(), check_grads=value)
    assert _wrapper(Toy(), check_grads=False).check_grads is False


# ---------------------------------------------------------------------------
# --amp keeps the guard (its AMP variant, same options)
# ---------------------------------------------------------------------------
@pytest.fixture
def fake_cuda(monkeypatch):
    """AmpOptimWrapper refuses to be built without CUDA; on CPU its grad
    scaler disables itself, which is enough to test the guard's logic."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)


def test_amp_keeps_the_guard_and_its_options(tiny_config, fake_cuda):
    from mmengine.optim import AmpOptimWrapper, build_optim_wrapper

    from lors_det.engine.optim_wrappers import (NonFiniteCheckAmpOptimWrapper,
                                                to_amp)
    cfg = Config.fromfile(tiny_config)
    cfg.optim_wrapper.type = 'NonFiniteCheckOptimWrapper'
    cfg.optim_wrapper.update(on_non_finite='skip', max_consecutive_skips=1)
    to_amp(cfg.optim_wrapper)  # what tools/train.py --amp does
    model = Toy()
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(ow, NonFiniteCheckAmpOptimWrapper)
    assert isinstance(ow, AmpOptimWrapper)
    assert (ow.on_non_finite, ow.max_consecutive_skips) == ('skip', 1)
    before = _params(model)
    model.train_step(_data(float('nan')), ow)  # skipped
    _assert_tensors_equal(before, _params(model), 'params')
    model.train_step(_data(), ow)  # a good step is applied
    assert any(not torch.equal(before[k], v)
               for k, v in _params(model).items())
    with pytest.raises(NonFiniteLossError, match='loss_mse=nan'):
        for _ in range(2):
            model.train_step(_data(float('nan')), ow)
    # any other wrapper type becomes mmengine's AmpOptimWrapper, as in mmdet
    other = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    to_amp(other)
    assert other == dict(
        type='AmpOptimWrapper',
        loss_scale='dynamic',
        optimizer=dict(type='SGD', lr=0.1))
