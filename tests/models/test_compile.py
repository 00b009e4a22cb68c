"""torch.compile readiness: dynamo traces the AdaMixer and LORS decoders
in one graph each (no graph break), in training and in eval mode."""
import pytest
import torch
import torch._dynamo
from helpers import SYNTHETIC, build_model, make_batch


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
