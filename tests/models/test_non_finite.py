import pytest
import torch

from lors_det.models.roi_heads.non_finite import (NonFinitePredictionError,
                                                  check_finite_predictions)


def test_names_the_first_bad_stage_and_what_was_not_finite():
    ok = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    bad_boxes = (torch.zeros(1, 2, 3), torch.full((1, 2, 4), float('nan')))
    bad_logits = (torch.full((1, 2, 3), float('inf')), torch.zeros(1, 2, 4))
    check_finite_predictions([ok, ok])
    with pytest.raises(
            NonFinitePredictionError,
            match=r'stage 1 \(loss terms s1\.\*\) predicted '
            r'non-finite boxes \(also stages \[2\]\)') as e:
        check_finite_predictions([ok, bad_boxes, bad_logits])
    assert e.value.stage == 1
    with pytest.raises(
            NonFinitePredictionError, match='non-finite cls logits before'):
        check_finite_predictions([ok, ok, bad_logits])


def test_a_stage_bad_only_on_another_rank_is_named_so(monkeypatch):
    from lors_det.models.roi_heads import non_finite
    other_rank = torch.tensor([0., 0., 1., 0., 0., 0.])  # its stage-1 logits
    monkeypatch.setattr(non_finite, 'reduce_mean', lambda flags:
                        (flags + other_rank) / 2)
    ok = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    bad_logits = (torch.full((1, 2, 3), float('inf')), torch.zeros(1, 2, 4))
    with pytest.raises(
            NonFinitePredictionError,
            match=r'stage 1 .* non-finite cls logits on another '
            r'rank \(also stages \[2\]\) before'):
        check_finite_predictions([ok, ok, bad_logits])


def test_the_decoder_loss_checks_its_predictions_before_the_matching():
    """Raised naming the stage (not scipy's "invalid numeric entries"), or,
    inside report_non_finite_predictions(), reported there with a NaN
    loss."""
    from helpers import SYNTHETIC, build_model, make_batch

    from lors_det.models.roi_heads.non_finite import (
        NON_FINITE_PREDICTIONS_KEY, report_non_finite_predictions)
    torch.manual_seed(0)
    model = build_model(
        SYNTHETIC['adamixer'], num_stages=2, stage_loss_weights=[1.0, 1.0])
    inputs, samples = make_batch(num_gts=(2, 1))
    handle = model.decoder.stages[0].fc_cls.register_forward_hook(
        lambda module, args, out: out * float('nan'))
    with pytest.raises(
            NonFinitePredictionError,
            match=r'decoder stage 0 .*cls logits') as info:
        model.loss(inputs, samples)
    assert info.value.stage == 0
    with report_non_finite_predictions() as reports:
        losses = model.loss(inputs, samples)
    assert [r.stage for r in reports] == [0]
    assert list(losses) == [NON_FINITE_PREDICTIONS_KEY]
    assert torch.isnan(losses[NON_FINITE_PREDICTIONS_KEY])
    with pytest.raises(NonFinitePredictionError):  # the context has ended
        model.loss(inputs, samples)
    handle.remove()
    losses = model.loss(inputs, samples)  # finite again: the usual terms
    assert {'s0.loss_cls', 's1.loss_iou'} <= set(losses)
