"""tools/deployment/pytorch2onnx.py: the tiny synthetic LORS model exported
with symbolic batch/height/width agrees with PyTorch in onnxruntime on batch
1 and 2 and two image sizes, unmerged (opset 16) and merged (opset 17, the
parameter-free LayerNorm as ``LayerNormalization``)."""
import os.path as osp
import re
import sys

import pytest
import torch
from helpers import LORS_CFG, REPO_ROOT, SYNTHETIC, build_model, run

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

TOOL = osp.join(REPO_ROOT, 'tools', 'deployment', 'pytorch2onnx.py')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Random weights with every parameter perturbed: non-zero LORS private
    parts, box regressor and sampling offsets (at init these are zero, and
    zero boxes or offsets would agree whatever the size handling)."""
    from lors_det.engine.fileio import save_checkpoint
    torch.manual_seed(0)
    model = build_model(SYNTHETIC['lors'])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = str(tmp_path_factory.mktemp('onnx') / 'lors_tiny.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), path)
    return path


def test_query_generator_from_sizes_equals_metas():
    model = build_model(SYNTHETIC['lors'])
    metas = [dict(img_shape=(96, 128)), dict(img_shape=(80, 112))]
    xyzr, content = model.query_generator(metas)
    xyzr2, content2 = model.query_generator.from_sizes(
        torch.tensor([[96., 128.], [80., 112.]]))
    assert torch.equal(xyzr, xyzr2) and torch.equal(content, content2)


@pytest.mark.slow
@pytest.mark.parametrize('merge,opset', [(False, 16), (True, 17)])
def test_dynamic_export_verifies(checkpoint, tmp_path, merge, opset):
    out = str(tmp_path / 'model.onnx')
    cmd = [
        TOOL, LORS_CFG, checkpoint, out, '--dynamic', '--verify', '--opset',
        str(opset), '--shape', '96', '128', '--verify-shapes', '96x128',
        '64x160', '--tolerance', '1e-3'
    ]
    if merge:
        cmd.append('--merge-lors')
    result = run([sys.executable, *cmd], timeout=900)
    print(result.stdout[-2000:])  # the differences, shown with pytest -s
    cases = re.findall(
        r'batch (\d) (\d+)x(\d+): max abs diff logits (\S+), '
        r'boxes (\S+) px', result.stdout)
    assert {(b, h, w)
            for b, h, w, _, _ in cases} == {('1', '96', '128'),
                                            ('2', '96', '128'),
                                            ('1', '64', '160'),
                                            ('2', '64', '160')}, result.stdout
    assert all(
        float(lg) <= 1e-3 and float(bx) <= 1e-3
        for *_, lg, bx in cases), result.stdout
    assert 'verify passed' in result.stdout
    assert osp.getsize(out) > 0


@pytest.mark.slow
def test_refuses_old_opset_and_writing_over_the_checkpoint(checkpoint):
    base = [sys.executable, TOOL, LORS_CFG, checkpoint]
    result = run([*base, '/tmp/unused.onnx', '--opset', '15'], check=False)
    assert result.returncode != 0 and '16 or later' in result.stdout
    result = run([*base, checkpoint], check=False)
    assert result.returncode != 0 and 'destroy the input' in result.stdout
    assert osp.getsize(checkpoint) > 0
