"""End-to-end tests of tools/demo.py and the analysis tools
(tools/analysis/plot_curves.py, tools/analysis/visualize_sampling_points.py,
tools/analysis/get_flops.py).

The tools run as subprocesses from the repository root on CPU, like
researchers run them; the demo only in its ``--quick`` mode (a few
iterations on a tiny dataset in a temporary work dir). Its command-line
overrides are checked on the merged config, without training.
"""
import importlib.util
import json
import os
import os.path as osp
import re
import sys

import pytest
import torch
from helpers import REPO_ROOT, run

DEMO = osp.join(REPO_ROOT, 'tools', 'demo.py')
PLOT_CURVES = osp.join(REPO_ROOT, 'tools', 'analysis', 'plot_curves.py')
VIS = osp.join(REPO_ROOT, 'tools', 'analysis', 'visualize_sampling_points.py')
FLOPS = osp.join(REPO_ROOT, 'tools', 'analysis', 'get_flops.py')
LORS_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                    'adamixer-lors_tiny_synthetic.py')
PLAIN_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                     'adamixer_tiny_synthetic.py')
# the demo's default config, as it names it in results.json
DEMO_CFG = 'lors_det::synthetic/adamixer-lors_tiny_synthetic_demo.py'
COCO_CFG = osp.join('configs', 'lors', 'adamixer-lors_r50_8xb2-1x_coco.py')
TIMEOUT_S = 300
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _run(cmd, check=True):
    res = run(cmd, check=check, timeout=TIMEOUT_S)
    return res.returncode, res.stdout


def _is_png(path):
    with open(path, 'rb') as f:
        return f.read(8) == PNG_MAGIC and osp.getsize(path) > 1000


# ---------------------------------------------------------------------------
# tools/demo.py --quick
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('demo') / 'work'
    _, out = _run(
        [sys.executable, DEMO, '--quick', '--work-dir',
         str(work_dir)])
    return str(work_dir), out


@pytest.mark.slow
def test_demo_quick_outputs(demo_dir):
    work_dir, out = demo_dir
    with open(osp.join(work_dir, 'results.json')) as f:
        res = json.load(f)
    metrics = res['metrics']
    # the final test evaluates the weights and val split of the last
    # validation, so it reproduces that validation's metrics exactly
    last_val = res['val_history'][-1]
    assert last_val['step'] == res['config']['max_epochs'] == 1
    for key, value in metrics.items():
        assert value == last_val[key], key
    # pycocotools gives -1 when it finds no ground truth: a real AP here is
    # in [0, 1] (it is 0.000 after 2 iterations, so no lower bound above 0)
    assert 0.0 <= metrics['coco/bbox_mAP'] <= metrics['coco/bbox_mAP_50'] <= 1
    assert res['coco_summary'][0].endswith(f"{metrics['coco/bbox_mAP']:.3f}")
    assert f"bbox mAP {metrics['coco/bbox_mAP']:.3f}  AP50 " \
        f"{metrics['coco/bbox_mAP_50']:.3f}" in out
    # --quick's settings reached the run
    assert res['config']['dataset'] == dict(
        num_train=8, num_val=4, img_size=64, seed=0)
    assert res['config']['iters_per_epoch'] == 2
    assert res['config']['data_root'] == osp.join(work_dir, 'data') + '/'
    # parameter counts with the LORS shared / private split
    assert res['params']['decoder_shared'] > 0
    assert res['params']['decoder_private'] > 0
    assert res['params']['total'] >= res['params']['decoder']
    assert res['wall_time_s']['total'] > 0
    assert res['config']['file'] == DEMO_CFG
    for name in ('curves.png', 'detections.png'):
        assert _is_png(osp.join(work_dir, name)), name
    # the test's predictions (COCO results file) cover the val images
    with open(osp.join(work_dir, 'val.bbox.json')) as f:
        dets = json.load(f)
    assert {d['image_id'] for d in dets} == {1, 2, 3, 4}
    # the printed summary: pycocotools' table and the parameter table
    assert 'Average Precision  (AP) @[ IoU=0.50      |' in out
    assert 'decoder' in out and 'shared' in out and 'private' in out
    # mmengine's logger reports the ETA while training
    assert 'eta:' in out


@pytest.mark.slow
def test_demo_missing_config(tmp_path):
    code, out = _run([
        sys.executable, DEMO, '--quick', '--config',
        str(tmp_path / 'nope.py'), '--work-dir',
        str(tmp_path / 'w')
    ],
                     check=False)
    assert code == 2 and 'does not exist' in out


@pytest.fixture(scope='module')
def demo_tool():
    spec = importlib.util.spec_from_file_location('demo_tool', DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo_cfg(demo_tool, *argv):
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # the default config path is relative to the repo
    try:
        return demo_tool.build_cfg(demo_tool.parse_args(list(argv)))
    finally:
        os.chdir(cwd)


def test_demo_config_defaults(demo_tool):
    """Without options the run is the demo config's, unedited."""
    cfg = _demo_cfg(demo_tool, '--work-dir', 'w')
    assert cfg.synthetic_data == dict(
        num_train=1024, num_val=64, img_size=128, seed=0)
    assert cfg.train_cfg.max_epochs == 6
    assert cfg.param_scheduler[-1].milestones == [5]
    assert cfg.train_dataloader.dataset.data_root == 'data/synthetic_demo/'
    assert cfg.test_evaluator.ann_file == \
        'data/synthetic_demo/annotations/instances_val.json'
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1


def test_demo_options_override_config(demo_tool, tmp_path):
    cfg = _demo_cfg(demo_tool, '--epochs', '12', '--data-root', str(tmp_path),
                    '--num-train', '16', '--img-size', '96', '--seed', '3',
                    '--work-dir', 'w')
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.default_hooks.checkpoint.interval == 12
    assert cfg.param_scheduler[-1].milestones == [10]  # 5 of 6 epochs
    assert cfg.param_scheduler[-1].end == 12
    assert cfg.param_scheduler[0].end == 100  # iteration-based: unchanged
    root = str(tmp_path) + '/'
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.data_root == root
    for split in ('val', 'test'):
        assert cfg[f'{split}_evaluator'].ann_file == \
            root + 'annotations/instances_val.json'
    assert cfg.synthetic_data == dict(
        num_train=16, num_val=64, img_size=96, seed=3)
    assert cfg.randomness.seed == 3
    assert cfg.work_dir == 'w'


def test_demo_refuses_classes_unlike_the_data(demo_tool, tmp_path):
    from lors_det.datasets import make_synthetic_coco
    ann_file = make_synthetic_coco(
        str(tmp_path), num_train=1, num_val=1, img_size=32)['val_ann_file']
    demo_tool.check_classes(_demo_cfg(demo_tool, '--work-dir', 'w'), ann_file)
    coco_cfg = _demo_cfg(demo_tool, '--config', COCO_CFG, '--work-dir', 'w')
    with pytest.raises(ValueError, match="classes is None.*holds .'circle'"):
        demo_tool.check_classes(coco_cfg, ann_file)


# ---------------------------------------------------------------------------
# tools/analysis/plot_curves.py
# ---------------------------------------------------------------------------
def _write_scalars(run_dir, records):
    os.makedirs(run_dir / 'vis_data')
    with open(run_dir / 'vis_data' / 'scalars.json', 'w') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in records))


@pytest.mark.slow
def test_plot_curves_writes_png(tmp_path):
    train = [{
        'lr': 1e-4,
        'loss': 9.0 - i,
        's5.loss_cls': 1.0 / (i + 1),
        's5.loss_bbox': 2.0,
        's5.loss_iou': 0.5,
        'iter': 10 * (i + 1),
        'step': 10 * (i + 1)
    } for i in range(3)]
    val = [{
        'coco/bbox_mAP': 0.1 * e,
        'coco/bbox_mAP_50': 0.2 * e,
        'step': e
    } for e in (1, 2)]
    _write_scalars(tmp_path / '20260101_000000', train[:1])  # older run
    _write_scalars(tmp_path / '20260102_000000', train + val)
    _, out = _run([sys.executable, PLOT_CURVES, str(tmp_path)])
    assert _is_png(tmp_path / 'curves.png')
    assert '20260102_000000' in out  # the newest run's file
    assert '3 train and 2 val records' in out


@pytest.mark.slow
def test_plot_curves_missing_scalars(tmp_path):
    code, out = _run([
        sys.executable, PLOT_CURVES,
        str(tmp_path), '--out',
        str(tmp_path / 'c.png')
    ],
                     check=False)
    assert code != 0
    assert osp.join(str(tmp_path), 'vis_data', 'scalars.json') in out
    assert not (tmp_path / 'c.png').exists()


# ---------------------------------------------------------------------------
# tools/analysis/visualize_sampling_points.py
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_visualize_sampling_points_lors(demo_dir, tmp_path):
    work_dir, _ = demo_dir
    ckpts = [f for f in os.listdir(work_dir) if f.endswith('.pth')]
    assert ckpts, 'the demo saved no checkpoint'
    image = osp.join(work_dir, 'data', 'val', '000000.png')
    out = tmp_path / 'points.png'
    _, log = _run([
        sys.executable, VIS, LORS_CFG,
        osp.join(work_dir,
                 sorted(ckpts)[-1]), image, '--stage', '2', '--topk', '2',
        '--out',
        str(out)
    ])
    assert _is_png(out)
    assert log.count('query ') == 2


@pytest.mark.slow
def test_visualize_sampling_points_plain(tmp_path):
    """Plain AdaMixer, one query, with an untrained (initialised) model."""
    import lors_det  # noqa: F401
    from lors_det.datasets import make_synthetic_coco
    from lors_det.models.param_counts import build_model
    make_synthetic_coco(
        str(tmp_path / 'data'),
        num_train=1,
        num_val=1,
        img_size=64,
        min_objects=1,
        empty_ratio=0.0)
    model = build_model(PLAIN_CFG)
    ckpt = tmp_path / 'plain.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'plain.png'
    _, log = _run([
        sys.executable, VIS, PLAIN_CFG,
        str(ckpt),
        str(tmp_path / 'data' / 'val' / '000000.png'), '--query', '3', '--out',
        str(out)
    ])
    assert _is_png(out)
    assert 'query 3:' in log


@pytest.mark.slow
def test_visualize_sampling_points_bad_query(tmp_path):
    code, log = _run([
        sys.executable, VIS, PLAIN_CFG,
        str(tmp_path / 'x'),
        str(tmp_path / 'y.png')
    ],
                     check=False)
    assert code != 0 and 'does not exist' in log


# ---------------------------------------------------------------------------
# tools/analysis/get_flops.py
# ---------------------------------------------------------------------------
def _decoder_flops(*args):
    _, out = _run([sys.executable, FLOPS, *args])
    m = re.search(r'^decoder FLOPs: (\d+)$', out, re.M)
    assert m, out[-3000:]
    return int(m.group(1)), out


@pytest.mark.slow
def test_get_flops_decoder_changes_with_p_in():
    base = ['--decoder-only', '--shape', '128', '128']
    flops_16, out = _decoder_flops(LORS_CFG, *base)
    assert flops_16 > 0
    # the adaptive mixing (5-D matmuls) and the attention are counted
    assert 'matmul' in out and 'scaled_dot_product_attention' in out
    flops_32, _ = _decoder_flops(LORS_CFG, *base, '--cfg-options',
                                 'model.decoder.in_points=32')
    assert flops_32 > flops_16


@pytest.mark.slow
def test_get_flops_whole_model_small_input():
    flops, out = _decoder_flops(PLAIN_CFG, '--shape', '96', '128')
    assert flops > 0
    m = re.search(r'^model FLOPs: (\d+)$', out, re.M)
    assert m and int(m.group(1)) > flops
    assert 'backbone' in out and 'mixing.generator' in out


def test_matmul_handle_counts_broadcast():
    """The matmul handle counts broadcast batch dims (mmengine's does not)
    and scaled_dot_product_attention is counted."""
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis'))
    try:
        from get_flops import flop_analyzer
    finally:
        sys.path.pop(0)

    class Net(torch.nn.Module):

        def forward(self, left, core, right, q):
            x = left @ core @ right  # (5,3,4)@(7,5,4,4)@(5,4,6)
            a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
            return x, a

    inputs = (torch.randn(5, 3, 4), torch.randn(7, 5, 4, 4),
              torch.randn(5, 4, 6), torch.randn(2, 4, 10, 8))
    ops = flop_analyzer(Net(), inputs).by_operator()
    assert ops['matmul'] == 7 * 5 * 3 * 4 * 4 + 7 * 5 * 3 * 4 * 6
    assert ops['scaled_dot_product_attention'] == 2 * (2 * 4 * 10 * 10 * 8)
