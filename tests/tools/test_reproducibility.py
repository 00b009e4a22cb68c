"""Reproducibility: two ``tools/train.py`` runs of the tiny AdaMixer config
with ``randomness=dict(seed=0, deterministic=True)`` log identical losses.

The two runs are the session's reference run and the run that is later
SIGKILLed while writing its last checkpoint (an extra test-only hook that
acts only inside that write; its iterations 1..MAX_ITERS are logged before
the kill). Both are separate processes started from scratch with the same
config and seed, so bit-identical losses show that nothing outside the seed
(process, time, file system order) enters training.
"""
import os.path as osp

import pytest
from helpers import CKPT_INTERVAL, MAX_ITERS, losses_by_run

from lors_det.engine.checkpoint import load_checkpoint_file


@pytest.mark.slow
def test_same_seed_gives_identical_losses(reference_run, interrupted_run):
    a = losses_by_run(reference_run)[0]
    b = losses_by_run(interrupted_run['work_dir'])[0]
    assert sorted(a) == sorted(b) == list(range(1, MAX_ITERS + 1))
    for it in a:
        assert a[it] == b[it], it  # exact equality, every loss term


@pytest.mark.slow
def test_same_seed_gives_identical_checkpoints(reference_run, interrupted_run):
    name = f'iter_{CKPT_INTERVAL}.pth'
    a = load_checkpoint_file(osp.join(reference_run, name))
    b = load_checkpoint_file(osp.join(interrupted_run['work_dir'], name))
    assert a['meta']['seed'] == b['meta']['seed'] == 0
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k, v in a['state_dict'].items():
        assert v.equal(b['state_dict'][k]), k
