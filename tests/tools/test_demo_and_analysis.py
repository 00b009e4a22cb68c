"""End-to-end tests of tools/demo.py and the analysis tools
(tools/analysis/visualize_sampling_points.py, tools/analysis/get_flops.py).

The tools run as subprocesses from the repository root on CPU, like
researchers run them; the demo only in its ``--quick`` mode (a few
iterations on a tiny dataset in a temporary work dir).
"""
import json
import os
import os.path as osp
import re
import sys

import pytest
import torch
from tool_runner import run

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO_ROOT, 'tools', 'demo.py')
VIS = osp.join(REPO_ROOT, 'tools', 'analysis', 'visualize_sampling_points.py')
FLOPS = osp.join(REPO_ROOT, 'tools', 'analysis', 'get_flops.py')
LORS_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                    'adamixer-lors_tiny_synthetic.py')
PLAIN_CFG = osp.join(REPO_ROOT, 'configs', 'synthetic',
                     'adamixer_tiny_synthetic.py')
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
    _, out = _run([sys.executable, DEMO, '--quick', '--work-dir',
                   str(work_dir)])
    return str(work_dir), out


def test_demo_quick_outputs(demo_dir):
    work_dir, out = demo_dir
    with open(osp.join(work_dir, 'results.json')) as f:
        res = json.load(f)
    metrics = res['metrics']
    assert 'coco/bbox_mAP' in metrics
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert -1.0 <= metrics[key] <= 1.0
    # parameter counts with the LORS shared / private split
    assert res['params']['decoder_shared'] > 0
    assert res['params']['decoder_private'] > 0
    assert res['params']['total'] >= res['params']['decoder']
    assert res['wall_time_s']['total'] > 0
    assert res['config']['file'].endswith('adamixer-lors_tiny_synthetic.py')
    assert len(res['val_history']) >= 1
    for name in ('curves.png', 'detections.png'):
        assert _is_png(osp.join(work_dir, name)), name
    # the printed summary: pycocotools' table and the parameter table
    assert 'Average Precision  (AP) @[ IoU=0.50      |' in out
    assert 'decoder' in out and 'shared' in out and 'private' in out
    # mmengine's logger reports the ETA while training
    assert 'eta:' in out


def test_demo_missing_config(tmp_path):
    code, out = _run([sys.executable, DEMO, '--quick', '--config',
                      str(tmp_path / 'nope.py'), '--work-dir',
                      str(tmp_path / 'w')], check=False)
    assert code != 0 and 'does not exist' in out


# ---------------------------------------------------------------------------
# tools/analysis/visualize_sampling_points.py
# ---------------------------------------------------------------------------
def test_visualize_sampling_points_lors(demo_dir, tmp_path):
    work_dir, _ = demo_dir
    ckpts = [f for f in os.listdir(work_dir) if f.endswith('.pth')]
    assert ckpts, 'the demo saved no checkpoint'
    image = osp.join(work_dir, 'data', 'val', '000000.png')
    out = tmp_path / 'points.png'
    _, log = _run([sys.executable, VIS, LORS_CFG,
                   osp.join(work_dir, sorted(ckpts)[-1]), image, '--stage',
                   '2', '--topk', '2', '--out', str(out)])
    assert _is_png(out)
    assert log.count('query ') == 2


def test_visualize_sampling_points_plain(tmp_path):
    """Plain AdaMixer, one query, with an untrained (initialised) model."""
    import lors_det  # noqa: F401
    from lors_det.datasets import make_synthetic_coco
    from lors_det.models.param_counts import build_model
    make_synthetic_coco(str(tmp_path / 'data'), num_train=1, num_val=1,
                        img_size=64, min_objects=1, empty_ratio=0.0)
    model = build_model(PLAIN_CFG)
    ckpt = tmp_path / 'plain.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'plain.png'
    _, log = _run([sys.executable, VIS, PLAIN_CFG, str(ckpt),
                   str(tmp_path / 'data' / 'val' / '000000.png'),
                   '--query', '3', '--out', str(out)])
    assert _is_png(out)
    assert 'query 3:' in log


def test_visualize_sampling_points_bad_query(tmp_path):
    code, log = _run([sys.executable, VIS, PLAIN_CFG, str(tmp_path / 'x'),
                      str(tmp_path / 'y.png')], check=False)
    assert code != 0 and 'does not exist' in log


# ---------------------------------------------------------------------------
# tools/analysis/get_flops.py
# ---------------------------------------------------------------------------
def _decoder_flops(*args):
    _, out = _run([sys.executable, FLOPS, *args])
    m = re.search(r'^decoder FLOPs: (\d+)$', out, re.M)
    assert m, out[-3000:]
    return int(m.group(1)), out


def test_get_flops_decoder_changes_with_p_in():
    base = ['--decoder-only', '--shape', '128', '128']
    flops_16, out = _decoder_flops(LORS_CFG, *base)
    assert flops_16 > 0
    # the adaptive mixing (5-D matmuls) and the attention are counted
    assert 'matmul' in out and 'scaled_dot_product_attention' in out
    flops_32, _ = _decoder_flops(LORS_CFG, *base, '--cfg-options',
                                 'model.decoder.in_points=32')
    assert flops_32 > flops_16


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
