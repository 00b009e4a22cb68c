"""tools/analysis/get_flops.py against ``torch.profiler(with_flops=True)``
on the tiny AdaMixer and LORS decoders: the LORS kernels (LORST's autograd
Function, LORSA's baddbmm) are counted."""
import importlib.util
import os.path as osp

import pytest
from helpers import REPO_ROOT, SYNTHETIC, load_config
from torch.profiler import ProfilerActivity, profile

# what the profiler counts, as multiply-adds (it counts 2 flops per MAC)
PROFILER_MATMULS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm')
# what the tool counts and the profiler does not
NOT_IN_PROFILER = ('layer_norm', 'grid_sampler')


def _tool():
    path = osp.join(REPO_ROOT, 'tools', 'analysis', 'get_flops.py')
    spec = importlib.util.spec_from_file_location('get_flops_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('name', ['adamixer', 'lors'])
def test_decoder_flops_match_profiler(name):
    tool = _tool()
    cfg = load_config(SYNTHETIC[name])
    res = tool.analyze(cfg, (128, 128), decoder_only=True)
    ops = res['decoder_by_operator']
    assert ops['matmul'] > 0 and ops['linear'] > 0
    assert not any(
        op in ('matmul', 'linear', 'bmm', 'mm', 'addmm')
        for op in res['unsupported_ops'])

    model = tool.build_model(cfg).eval()
    h, w = res['input_shape']
    wrapper = tool._DecoderOnly(model, (h, w))
    features = tool.random_features(model, 1, h, w)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        wrapper(*features)
    profiler_macs = sum(
        e.flops for e in prof.key_averages() if e.key in PROFILER_MATMULS) / 2
    comparable = res['decoder_flops'] - sum(res['decoder_by_operator'][op]
                                            for op in NOT_IN_PROFILER)
    assert comparable == pytest.approx(profiler_macs, rel=0.01)
    assert res['decoder_flops'] == pytest.approx(profiler_macs, rel=0.08)
