import pytest
import torch

from lors_det.models.roi_heads.non_finite import (NonFinitePredictionError,
                                                  check_finite_predictions)


def test_names_the_first_bad_stage_and_what_was_not_finite():
    ok = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    bad_boxes = (torch.zeros(1, 2, 3), torch.full((1, 2, 4), float('nan')))
    bad_logits = (torch.full((1, 2, 3), float('inf')), torch.zeros(1, 2, 4))
    check_finite_predictions([ok, ok])
    with pytest.raises(NonFinitePredictionError,
                       match=r'stage 1 \(loss terms s1\.\*\) predicted '
                       r'non-finite boxes \(also stages \[2\]\)') as e:
        check_finite_predictions([ok, bad_boxes, bad_logits])
    assert e.value.stage == 1
    with pytest.raises(NonFinitePredictionError,
                       match='non-finite cls logits before'):
        check_finite_predictions([ok, ok, bad_logits])


def test_a_stage_bad_only_on_another_rank_is_named_so(monkeypatch):
    from lors_det.models.roi_heads import non_finite
    other_rank = torch.tensor([0., 0., 1., 0., 0., 0.])  # its stage-1 logits
    monkeypatch.setattr(non_finite, 'reduce_mean',
                        lambda flags: (flags + other_rank) / 2)
    ok = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    bad_logits = (torch.full((1, 2, 3), float('inf')), torch.zeros(1, 2, 4))
    with pytest.raises(NonFinitePredictionError,
                       match=r'stage 1 .* non-finite cls logits on another '
                       r'rank \(also stages \[2\]\) before'):
        check_finite_predictions([ok, ok, bad_logits])
