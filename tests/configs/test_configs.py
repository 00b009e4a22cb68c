"""Every shipped config loads, builds its model, and says what it should."""
import ast
import os

import pytest
import torch
from helpers import REPO_ROOT, load_config
from mmdet.registry import MODELS

CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')


def shipped_configs():
    """Every .py under configs/ except the ``_base_`` fragments."""
    found = []
    for root, dirs, files in os.walk(CONFIG_DIR):
        dirs[:] = [d for d in dirs if d != '_base_']
        found += [
            os.path.relpath(os.path.join(root, f), REPO_ROOT) for f in files
            if f.endswith('.py')
        ]
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
    assert {
        'configs/adamixer', 'configs/lors', 'configs/lors/ablations',
        'configs/lorita', 'configs/tied', 'configs/synthetic'
    } <= dirs


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds(path):
    cfg = load_config(path)
    assert cfg.custom_imports == dict(
        imports=['lors_det'], allow_failed_imports=False)
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


def test_coco_recipe_losses_and_matching_costs():
    """AdaMixer's recipe (focal 2.0 with gamma 2 / alpha 0.25, L1 5.0,
    GIoU 2.0; Hungarian costs 2 / 5 / 2 in xyxy), set once as the decoder's
    defaults, is what the COCO configs build; and the stage ablations get
    one loss weight per stage without restating them."""
    cfg = load_config('configs/lors/adamixer-lors_r50_8xb2-1x_coco.py')
    cfg.model.backbone.init_cfg = None
    crit = MODELS.build(cfg.model).decoder.criterion
    assert (crit.loss_cls.gamma, crit.loss_cls.alpha,
            crit.loss_cls.loss_weight) == (2.0, 0.25, 2.0)
    assert crit.loss_cls.use_sigmoid
    assert crit.loss_bbox.loss_weight == 5.0
    assert crit.loss_iou.loss_weight == 2.0
    costs = crit.assigner.match_costs
    assert [(type(c).__name__, c.weight)
            for c in costs] == [('FocalLossCost', 2.0), ('BBoxL1Cost', 5.0),
                                ('IoUCost', 2.0)]
    assert costs[1].box_format == 'xyxy' and costs[2].iou_mode == 'giou'
    for n in (4, 8):
        ablation = load_config(f'configs/lors/ablations/adamixer-lors-'
                               f'{n}stages_r50_8xb2-1x_coco.py')
        assert 'stage_loss_weights' not in ablation.model.decoder
        ablation.model.backbone.init_cfg = None
        decoder = MODELS.build(ablation.model).decoder
        assert decoder.stage_loss_weights == [1.0] * n


@pytest.mark.slow
@pytest.mark.parametrize('path', [
    'configs/adamixer/adamixer_x101-dcn_300q_8xb2-crop-ms-480-800-3x_coco.py',
    'configs/lors/adamixer-lors_x101-dcn_300q_8xb2-crop-ms-480-800-3x_coco.py'
])
def test_x101_dcn_configs_run_mmcv_deformable_conv_on_cpu(path):
    """The official model zoo's X101-DCN (ResNeXt-101 32x4d, mmcv's DCN in
    stages 2-4, published AP 49.5) builds at full size and predicts once
    on the CPU through mmcv's deformable convolution."""
    from mmcv.ops import DeformConv2dPack
    from mmdet.structures import DetDataSample
    cfg = load_config(path)
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'open-mmlab://resnext101_32x4d'
    cfg.model.backbone.init_cfg = None  # no weights offline
    model = MODELS.build(cfg.model).eval()
    backbone = model.backbone
    assert (type(backbone).__name__, backbone.groups,
            backbone.base_width) == ('ResNeXt', 32, 4)
    dcn = [[isinstance(block.conv2, DeformConv2dPack) for block in layer]
           for layer in (backbone.layer1, backbone.layer2, backbone.layer3,
                         backbone.layer4)]
    assert [set(d) for d in dcn] == [{False}, {True}, {True}, {True}]
    assert [len(d) for d in dcn] == [3, 4, 23, 3]
    torch.manual_seed(0)
    image = torch.rand(1, 3, 128, 160)
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(128, 160),
            ori_shape=(128, 160),
            scale_factor=(1., 1.),
            batch_input_shape=(128, 160)))
    with torch.no_grad():
        pred = model(image, [sample], mode='predict')[0].pred_instances
    assert pred.bboxes.shape == (300, 4)
    assert torch.isfinite(pred.bboxes).all()
    assert (pred.scores >= 0).all() and (pred.scores <= 1).all()


def _bases(path):
    """The ``_base_`` list a config file writes (read from its text)."""
    with open(os.path.join(REPO_ROOT, path)) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and getattr(node.targets[0], 'id', None) == '_base_'):
            bases = ast.literal_eval(node.value)
            return [bases] if isinstance(bases, str) else bases
    return []


def test_every_lors_config_is_its_adamixer_config_plus_a_lors_decoder():
    """configs/lors/adamixer-lors_X.py inherits adamixer/adamixer_X.py and
    _base_/lors_decoder.py, nothing else (so the 100- and 300-query 3x
    configs are parallel in both folders); the tiny LORS configs do the same
    with _base_/lors_decoder_tiny.py, which holds their mixing once."""
    lors = [p for p in CONFIGS if p.startswith('configs/lors/adamixer-lors_')]
    assert len(lors) == 6
    for path in lors:
        rest = os.path.basename(path)[len('adamixer-lors_'):]
        assert _bases(path) == [
            f'../adamixer/adamixer_{rest}', '../_base_/lors_decoder.py'
        ], path
    for folder, name in (('synthetic', 'synthetic'), ('proxy', 'proxy')):
        path = f'configs/{folder}/adamixer-lors_tiny_{name}.py'
        assert _bases(path) == [
            f'./adamixer_tiny_{name}.py', '../_base_/lors_decoder_tiny.py'
        ], path
    assert _bases(
        'configs/adamixer/adamixer_r50_300q_8xb2-crop-ms-480-800-'
        '3x_coco.py') == ['./adamixer_r50_8xb2-crop-ms-480-800-'
                          '3x_coco.py']
