"""Every shipped config loads, builds its model, and says what it should."""
import glob
import os

import pytest
from mmdet.registry import MODELS

from conftest import REPO, load_config

CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, 'configs', '**', '*.py'),
                       recursive=True) if '_base_' not in p)


def test_configs_are_found():
    assert len(CONFIGS) >= 14


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds(path):
    cfg = load_config(path)
    assert cfg.custom_imports == dict(imports=['lors_det'],
                                      allow_failed_imports=False)
    model = MODELS.build(cfg.model)
    assert model.num_queries == cfg.model.query_generator.num_queries
    expect_300 = '300q' in path
    assert (model.num_queries == 300) == expect_300
    decoder = model.decoder
    lors = os.path.basename(path).startswith('adamixer-lors')
    assert (type(decoder.mixing.generator).__name__ == 'LORSAGenerator') == (
        lors and 'lorst-only' not in path)
    if 'coco' in path:
        assert cfg.optim_wrapper.optimizer.type == 'AdamW'
        assert cfg.optim_wrapper.optimizer.lr == 2.5e-5
        assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
        assert cfg.train_dataloader.batch_size == 2
        assert cfg.auto_scale_lr.base_batch_size == 16
        milestones = cfg.param_scheduler[-1].milestones
        if '3x' in path:
            assert cfg.train_cfg.max_epochs == 36 and milestones == [24, 33]
        else:
            assert cfg.train_cfg.max_epochs == 12 and milestones == [8, 11]
    if lors and 'coco' in path and 'ablations' not in path:
        mixing = decoder.mixing
        assert (mixing.num_groups, mixing.in_points) == (2, 64)
        assert decoder.mixing.generator.rank == 16
        assert decoder.mixing.generator.num_factors == [1, 1, 2, 2, 3, 3]
        assert decoder.mixing.out_proj.ranks == [8] * 6
