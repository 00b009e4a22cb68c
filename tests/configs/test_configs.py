"""Every shipped config loads, builds its model, and says what it should."""
import os

import pytest
import torch
from mmdet.registry import MODELS

from builders import REPO, load_config

CONFIG_DIR = os.path.join(REPO, 'configs')


def shipped_configs():
    """Every .py under configs/ except the ``_base_`` fragments."""
    found = []
    for root, dirs, files in os.walk(CONFIG_DIR):
        dirs[:] = [d for d in dirs if d != '_base_']
        found += [os.path.relpath(os.path.join(root, f), REPO)
                  for f in files if f.endswith('.py')]
    return sorted(found)


CONFIGS = shipped_configs()


def build(cfg):
    """Build on the meta device: shapes and structure, no memory and no
    init cost. Swin's constructor reads tensor values (its drop-path
    schedule), so what cannot be built there is built on the CPU."""
    try:
        with torch.device('meta'):
            return MODELS.build(cfg.model)
    except NotImplementedError:
        return MODELS.build(cfg.model)


def test_every_config_directory_is_collected():
    dirs = {os.path.dirname(p) for p in CONFIGS}
    assert {'configs/adamixer', 'configs/lors', 'configs/lors/ablations',
            'configs/lorita', 'configs/tied', 'configs/synthetic'} <= dirs


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds(path):
    cfg = load_config(path)
    assert cfg.custom_imports == dict(imports=['lors_det'],
                                      allow_failed_imports=False)
    model = build(cfg)
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
