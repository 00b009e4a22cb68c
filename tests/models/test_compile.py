"""torch.compile readiness: dynamo traces the AdaMixer and LORS decoders
in one graph each (no graph break), in training and in eval mode, and
mmengine's ``compile`` option trains the tiny LORS config."""
import sys

import pytest
import torch
import torch._dynamo
from helpers import (MAX_ITERS, SYNTHETIC, TRAIN, build_model, losses_by_run,
                     make_batch, run, tool_env)


def _decoder_and_inputs(name):
    torch.manual_seed(0)
    model = build_model(SYNTHETIC[name])
    inputs, samples = make_batch(num_gts=(3, 1))
    with torch.no_grad():
        features = model.neck(model.backbone(inputs))
    xyzr, query = model.query_generator([s.metainfo for s in samples])
    return model.decoder, (list(features), xyzr.detach(), query.detach())


def _graph_breaks(fn, *args):
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(fn)(*args)
    finally:
        torch._dynamo.reset()
    return explained.graph_break_count, [
        str(b.reason)[:200] for b in explained.break_reasons
    ]


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('name', sorted(SYNTHETIC))
def test_stages_and_mixing_trace_without_graph_breaks(name, train):
    """Each stage with its mixing (sampling, LORSA/LORST or the dense
    stacks, attention, FFN, heads), the first and the last stage (LORS:
    K = 1 and K = 3 low-rank terms)."""
    decoder, (features, xyzr, query) = _decoder_and_inputs(name)
    decoder.train(train)
    strides = decoder.featmap_strides
    for i in (0, decoder.num_stages - 1):

        def run_stage(features, xyzr, query, i=i):
            return decoder.stages[i](features, strides, xyzr, query,
                                     lambda x, q: decoder.mixing(x, q, i))

        with torch.set_grad_enabled(train):
            assert _graph_breaks(run_stage, features, xyzr, query) == (0, [])


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(SYNTHETIC))
def test_decoder_traces_without_graph_breaks(name):
    decoder, inputs = _decoder_and_inputs(name)
    for train in (True, False):
        decoder.train(train)
        with torch.set_grad_enabled(train):
            assert _graph_breaks(decoder, *inputs) == (0, [])


@pytest.mark.slow
def test_mmengine_compile_option_trains_like_eager(tiny_lors_config, tmp_path):
    """``--cfg-options compile.backend=aot_eager`` (dynamo + AOT autograd,
    no inductor code generation, which takes minutes on a CPU; the inductor
    run is in docs/benchmarks.md) trains the tiny LORS config with the eager
    run's losses, iteration by iteration, and never recompiles lors_det code
    (every batch has the same shapes; traced metadata such as image ids
    would recompile the model at every batch)."""
    losses = {}
    for mode, options in (('eager', []),
                          ('compiled',
                           ['--cfg-options', 'compile.backend=aot_eager'])):
        work_dir = str(tmp_path / mode)
        out = run([
            sys.executable, TRAIN, tiny_lors_config, '--work-dir', work_dir,
            *options
        ], dict(tool_env(), TORCH_LOGS='recompiles'))
        assert ('Model has been "compiled"' in out.stdout) == bool(options)
        recompiled = [
            line for line in out.stdout.splitlines()
            if 'Recompiling function' in line and 'lors_det' in line
        ]
        assert recompiled == []
        [losses[mode]] = losses_by_run(work_dir)
    assert sorted(losses['compiled']) == list(range(1, MAX_ITERS + 1))
    for it, eager in losses['eager'].items():
        assert losses['compiled'][it] == pytest.approx(eager, rel=1e-4), it


def test_set_loss_runs_eagerly_under_torch_compile():
    """Inductor (torch 2.1) miscompiles the Hungarian assigner's index_put_
    (NameError 'buf0'): the set loss must stay eager inside a compiled
    train step, with the eager losses."""
    torch.manual_seed(0)
    criterion = build_model(SYNTHETIC['adamixer']).decoder.criterion
    _, samples = make_batch(num_gts=(3, 1))
    cls_score = torch.randn(2, 10, 3)
    xy = torch.rand(2, 10, 2) * 32
    boxes = torch.cat([xy, xy + 4 + torch.rand(2, 10, 2) * 20], -1)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(criterion)(cls_score, boxes, samples)
    finally:
        torch._dynamo.reset()
    eager = criterion(cls_score, boxes, samples)
    assert compiled.keys() == eager.keys()
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, msg=name)
