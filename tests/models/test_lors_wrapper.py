"""LORSWrapper: LORS on mmdet's own Sparse R-CNN and DINO, from a config."""
import copy
import glob
import math
import os.path as osp

import pytest
import torch
from helpers import REPO_ROOT, assert_xavier_uniform, load_config, make_batch
from mmdet.registry import MODELS
from mmengine.hooks import Hook
from mmengine.runner import Runner

from lors_det.lors import count_parameters
from lors_det.lors.share import SharedLayers

CONFIGS = 'projects/lors_mmdet/configs'
SPARSE = f'{CONFIGS}/sparse-rcnn-lors_r50_fpn_1x_coco.py'
DINO = f'{CONFIGS}/dino-4scale-lors_r50_8xb2-12e_coco.py'
TINY = {
    'sparse_rcnn': f'{CONFIGS}/synthetic/sparse-rcnn-lors_tiny_synthetic.py',
    'dino': f'{CONFIGS}/synthetic/dino-4scale-lors_tiny_synthetic.py',
}


def build(path, meta=False, **detector):
    """The config's model; ``detector`` overrides ``model.detector``'s
    fields (dotted keys merge: ``**{'backbone.init_cfg': None}``)."""
    cfg = load_config(path)
    cfg.merge_from_dict(
        {f'model.detector.{k}': v
         for k, v in detector.items()})
    if meta:  # structure and counts only: no memory, no init cost
        with torch.device('meta'):
            return MODELS.build(cfg.model)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def lors_params(model):
    return {n: p for n, p in model.named_parameters() if n.startswith('lors')}


def randomise_private(model, std):
    """Non-zero values for the zero-initialised private parts (LORST B,
    LORSA core generators), so that every private parameter matters."""
    with torch.no_grad():
        for name, p in lors_params(model).items():
            if '.private_B.' in name or '.private_generators.' in name:
                p.normal_(std=std)


def tensors(out):
    """Every tensor of a nested forward output, in order."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in tensors(o)]
    return []


def assert_same_outputs(a, b):
    a, b = tensors(a), tensors(b)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def lorst_numel(fan_in, fan_out, rank, num_factors):
    """(shared, private) of a LORST linear: W, and per layer A, B, bias."""
    return fan_in * fan_out, sum(k * rank * (fan_in + fan_out) + fan_out
                                 for k in num_factors)


def test_configs_build_offline_and_share_as_the_closed_forms_say():
    paths = glob.glob(
        osp.join(REPO_ROOT, CONFIGS, '**', '*.py'), recursive=True)
    # the tiny ones are built by the tests below
    assert {osp.relpath(p, REPO_ROOT) for p in paths if '_base_' not in p} == \
        set(TINY.values()) | {SPARSE, DINO}
    for path in (SPARSE, DINO, *TINY.values()):
        assert load_config(path).custom_imports == dict(
            imports=['lors_det'], allow_failed_imports=False)
    N, C = 6, 256
    # Sparse R-CNN: LORSA on the dynamic-conv generator (C -> C*c + c*C),
    # LORST on its output projection (C*7*7 -> C) and the FFN
    c, r, ks = 64, 16, [1, 1, 2, 2, 3, 3]
    shared = C * 2 * C * c + 2 * C * c
    private = sum((C + 1) * 2 * k * r * r + k * r * (C + c) * 2 for k in ks)
    for fan_in, fan_out in ((C * 49, C), (C, 2048), (2048, C)):
        s, p = lorst_numel(fan_in, fan_out, 8, [1] * N)
        shared, private = shared + s, private + p
    model = build(SPARSE, meta=True)
    assert model.detector.rpn_head.num_proposals == 100  # mmdet's recipe
    counts = count_parameters(model.lors)
    assert (counts['shared'], counts['private']) == (shared, private)
    assert counts['other'] == 0
    dense = N * ((C + 1) * 2 * C * c + (C * 49 + 1) * C + (C + 1) * 2048 +
                 (2048 + 1) * C)
    assert model.lors['roi_head-bbox_head'].dense_numel == dense
    # the detector lost exactly the replaced linears
    with torch.device('meta'):
        plain = MODELS.build(load_config(SPARSE).model.detector)
    assert count_parameters(plain)['total'] - dense == count_parameters(
        model.detector)['total']
    # DINO: LORST on the 4 linears of the deformable cross-attention
    # (8 heads x 4 levels x 4 points) and the 2 of the FFN
    shared = private = 0
    for fan_in, fan_out in ((C, C), (C, C), (C, 8 * 4 * 4 * 2), (C, 8 * 4 * 4),
                            (C, 2048), (2048, C)):
        s, p = lorst_numel(fan_in, fan_out, 8, [1] * N)
        shared, private = shared + s, private + p
    model = build(DINO, meta=True)
    assert model.detector.num_queries == 900
    counts = count_parameters(model.lors)
    assert (counts['shared'], counts['private']) == (shared, private)


@pytest.mark.parametrize(
    'path, detector',
    [
        # fewer queries for a CPU: 20 proposals instead of 100; DINO's 50
        # instead of 900 also because the 64 px test images give 85 encoder
        # tokens, fewer than the recipe's 900 two-stage proposals
        (SPARSE, {
            'rpn_head.num_proposals': 20
        }),
        (DINO, {
            'num_queries': 50
        }),
    ])
def test_full_config_cpu_train_step_reaches_shared_and_private(path, detector):
    model = build(path, **detector)
    # the parts of mmdet's init a forward needs (Sparse R-CNN's proposal
    # boxes, DINO's level embeddings), without the pretrained backbone
    if 'sparse' in path:
        model.detector.rpn_head.init_weights()
    else:
        torch.nn.init.normal_(model.detector.level_embed)
    randomise_private(model, 1e-4)  # every part gets a gradient
    inputs, samples = make_batch(num_gts=(3, 1))
    losses = model(inputs, samples, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    loss.backward()
    params = lors_params(model)
    assert any('shared' in n for n in params)
    assert any('private' in n for n in params)
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def share_spec(cfg):
    return {k: v for k, v in cfg.model.share[0].items() if k != 'stack'}


@pytest.mark.parametrize('name', sorted(TINY))
def test_sharing_an_mmdet_stack_whose_layers_start_equal_changes_nothing(name):
    """Shared weight = layer 0's weights, private parts zero: the detector
    computes what it computed before its stack was shared."""
    cfg = load_config(TINY[name])
    torch.manual_seed(0)
    detector = MODELS.build(cfg.model.detector)
    detector.init_weights()
    layers = detector.get_submodule(cfg.model.share[0].stack)
    for layer in layers[1:]:
        layer.load_state_dict(layers[0].state_dict())
    detector.eval()
    inputs, samples = make_batch()
    with torch.no_grad():
        before = detector(inputs, samples, mode='tensor')
        shared = SharedLayers(layers, **share_spec(cfg))
        after = detector(inputs, samples, mode='tensor')
    assert len(shared.targets) == (4 if name == 'sparse_rcnn' else 6)
    assert_same_outputs(before, after)


@pytest.mark.parametrize('name', sorted(TINY))
def test_merged_unmerged_and_plain_mmdet_agree(name):
    model = build(TINY[name])
    model.init_weights()
    model.eval()
    randomise_private(model, std=0.1)
    inputs, samples = make_batch()
    with torch.no_grad():
        unmerged = model(inputs, samples, mode='tensor')
        model.merge_lors()
        assert model.lors_merged
        assert_same_outputs(unmerged, model(inputs, samples, mode='tensor'))
        with pytest.raises(RuntimeError, match='merged LORS weights'):
            model(inputs, samples, mode='loss')
        model.unmerge_lors()
        assert_same_outputs(unmerged, model(inputs, samples, mode='tensor'))
        # unshared, the detector is mmdet's plain model: its checkpoint
        # loads into one built from the original config
        for shared in model.lors.values():
            shared.unshare()
        plain = MODELS.build(load_config(TINY[name]).model.detector).eval()
        plain.load_state_dict(model.detector.state_dict())  # strict
        assert_same_outputs(unmerged, plain(inputs, samples, mode='tensor'))


def test_init_weights_runs_mmdet_init_on_the_plain_layers():
    # DINO: MultiScaleDeformableAttention's init (zero offsets weight, a
    # per-head direction grid as bias) must survive the sharing
    model = build(TINY['dino'])
    model.init_weights()
    offsets = model.lors['decoder-layers'].lorst['cross_attn-sampling_offsets']
    assert offsets.shared_weight.abs().sum() == 0
    grid = offsets.private_bias[0]
    assert grid.abs().sum() > 0
    assert all(torch.equal(b, grid) for b in offsets.private_bias)
    assert all(B.abs().sum() == 0 for B in offsets.private_B)
    # Sparse R-CNN: DIIHead's Xavier init of the generator
    model = build(TINY['sparse_rcnn'])
    model.init_weights()
    lorsa = model.lors['roi_head-bbox_head'].lorsa[
        'instance_interactive_conv-dynamic_layer']
    assert_xavier_uniform(lorsa.shared_generator.weight)
    assert all(g.weight.abs().sum() == 0 for g in lorsa.private_generators)


def test_share_entries_are_checked_naming_the_field():
    cfg = load_config(TINY['sparse_rcnn'])
    bad = copy.deepcopy(cfg.model)
    bad.share[0].stack = 'roi_head.bbox_heads'
    with pytest.raises(
            ValueError,
            match=r"model.share\[0\]: stack="
            r"'roi_head.bbox_heads' is not an nn.ModuleList of "
            'SparseRCNN'):
        MODELS.build(bad)
    bad = copy.deepcopy(cfg.model)
    bad.share = [bad.share[0], copy.deepcopy(bad.share[0])]
    with pytest.raises(
            ValueError,
            match=r"model.share\[1\]: stack "
            r"'roi_head.bbox_head' is given twice"):
        MODELS.build(bad)
    bad = copy.deepcopy(cfg.model)
    bad.share[0].lorts = bad.share[0].pop('lorst')
    with pytest.raises(
            TypeError, match=r"model.share\[0\]: entry: unknown "
            "key 'lorts'"):
        MODELS.build(bad)


RUNNER_KEYS = ('model', 'work_dir', 'train_dataloader', 'val_dataloader',
               'train_cfg', 'val_cfg', 'optim_wrapper', 'param_scheduler',
               'val_evaluator', 'default_hooks', 'visualizer', 'randomness',
               'experiment_name')


class _Snapshot(Hook):
    """The shared stacks' parameters when training starts (after init)."""

    def before_train(self, runner):
        self.before = {
            n: p.detach().clone()
            for n, p in lors_params(runner.model).items()
        }


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    from lors_det.datasets import make_synthetic_coco
    root = tmp_path_factory.mktemp('lors_mmdet_data')
    make_synthetic_coco(
        str(root),
        num_train=4,
        num_val=2,
        img_size=64,
        min_objects=1,
        empty_ratio=0.0)
    return str(root) + '/'


@pytest.mark.parametrize('name', sorted(TINY))
def test_tiny_synthetic_config_trains_and_evaluates(name, synthetic_root,
                                                    tmp_path):
    cfg = load_config(TINY[name])
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = synthetic_root
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = (
        synthetic_root + 'annotations/instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=2, val_interval=100)
    cfg.param_scheduler = None
    cfg.optim_wrapper.optimizer.lr = 1e-3
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = cfg.visualizer.name = f'lors_mmdet_{name}'
    cfg.randomness = dict(seed=0)
    # Runner.from_cfg(cfg) but without cfg: the runner would spend ~10 s
    # pretty-printing the config into the log and the work_dir
    runner = Runner(
        **{k: cfg.get(k)
           for k in RUNNER_KEYS},
        default_scope=cfg.default_scope,
        log_level='WARNING')
    snapshot = _Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    after = lors_params(runner.model)
    assert after.keys() == snapshot.before.keys()
    for n, p in after.items():  # the optimizer holds the stacks' parameters
        assert not torch.equal(p, snapshot.before[n]), n
    metrics = runner.val()
    assert math.isfinite(metrics['coco/bbox_mAP'])
