"""FLOPs and parameters of an AdaMixer / AdaMixer+LORS detector.

Usage::

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--decoder-only]
        [--batch-size B] [--cfg-options k=v ...] [--json]

The model is built from the config (no weights are loaded: FLOPs do not
depend on them) and traced once with mmengine's jit-based
:class:`mmengine.analysis.FlopAnalyzer` (the fvcore counter):

* whole model: ``model._forward`` on a random ``(B, 3, H, W)`` image
  (padded to the data preprocessor's ``pad_size_divisor``, as at test time);
* ``--decoder-only``: the query generator + decoder on random neck features
  of the same input size (cheap; the backbone is not traced).

Conventions (as in fvcore, mmdet's ``get_flops`` and the AdaMixer / LORS
papers): one fused multiply-add counts as ONE flop (i.e. these are MACs).

What is counted:

* convolutions, ``nn.Linear`` (``aten::linear`` / ``addmm``), ``mm``/``bmm``;
* ``aten::matmul`` (``@``) on N-D tensors with broadcasting (the AdaMixer
  channel / spatial mixing, ``x @ M`` and ``S @ x`` on 5-D tensors):
  mmengine's stock handle misses the broadcast batch dimensions of the
  second operand; it is replaced here by a broadcasting one;
* ``aten::scaled_dot_product_attention`` (what ``nn.MultiheadAttention``
  runs in torch 2.x): ``Q K^T`` and ``attn V`` -- NOT counted by mmengine
  (reported as an unsupported op and silently left out), added here;
* ``grid_sample`` (the 3D sampling): 4 MACs per sampled value (bilinear),
  once per pyramid level (mmengine's default handle);
* batch / group / layer norm (mmengine's estimates: 2 to 5 per element,
  including the parameter-free LN inside the mixing);
* LORST and LORSA are plain ``linear`` and ``matmul`` ops (``x A^T``,
  ``(x A^T) B^T``, ``L Z``, ``[L Z] [R]``), counted by the handles above.

Checked against ``torch.profiler(with_flops=True)`` (its mm / addmm / bmm /
baddbmm FLOPs halved to MACs) on the decoder at 800 x 1333, batch 1
(tests/tools/test_get_flops_profiler.py does the same on the tiny configs):
``configs/lors/adamixer-lors_r50_8xb2-1x_coco.py`` 17.920 G here vs 17.640 G
(+1.6%),
``configs/adamixer/adamixer_r50_8xb2-1x_coco.py`` 12.159 G vs 11.978 G
(+1.5%). The difference is what the profiler does not count: layer norms and
``grid_sample`` (0.28 G for LORS, 0.18 G for AdaMixer).

What is NOT counted (fvcore convention, negligible here): element-wise ops
(add, mul, ReLU, sigmoid, softmax, the level weighting of the sampled
features, the residual adds, the sum over LORSA factors), box arithmetic
(xyzr <-> xyxy, IoF for the attention bias, position embedding) and
post-processing (top-k). The table lists the ops met during the trace that
have no handle.
"""
import argparse
import json
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config, DictAction

from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.tables import text_table
from lors_det.models.param_counts import build_model


# ---------------------------------------------------------------------------
# extra / fixed op handles
# ---------------------------------------------------------------------------
def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``a @ b`` with numpy broadcasting: batch * m * k * n MACs."""
    a, b = get_shape(inputs[0]), get_shape(inputs[1])
    if a is None or b is None:  # shape unknown to the tracer
        out = get_shape(outputs[0])
        raise ValueError(f'matmul with unknown input shapes (out {out})')
    a, b = list(a), list(b)
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    assert a[-1] == b[-2], (a, b)
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return _prod(batch) * a[-2] * a[-1] * b[-1]


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``softmax(Q K^T) V``: (..., L, E) x (..., S, E) x (..., S, Ev)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = _prod(torch.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2])))
    L, E = q[-2], q[-1]
    S, Ev = k[-2], v[-1]
    return batch * L * S * E + batch * L * S * Ev


EXTRA_HANDLES = {
    'aten::matmul': matmul_flop_jit,
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
}


def flop_analyzer(model: nn.Module, inputs: tuple) -> FlopAnalyzer:
    """mmengine's FlopAnalyzer with the handles above, quiet."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**EXTRA_HANDLES)
    # shape reads (the sampling's feature sizes, kept symbolic for ONNX)
    analyzer.set_op_handle('aten::_shape_as_tensor', None)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


# ---------------------------------------------------------------------------
# traced wrappers
# ---------------------------------------------------------------------------
class _Whole(nn.Module):
    """``model._forward(img)`` -> flat tuple of tensors (traceable)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor):
        outs = self.model._forward(img)
        return tuple(t for pair in outs for t in pair)


class _DecoderOnly(nn.Module):
    """Query generator + decoder on given neck features."""

    def __init__(self, model: nn.Module, img_shape: tuple):
        super().__init__()
        self.query_generator = model.query_generator
        self.decoder = model.decoder
        self.img_shape = img_shape

    def forward(self, *features: torch.Tensor):
        metas = [dict(img_shape=self.img_shape)] * features[0].size(0)
        xyzr, query = self.query_generator(metas)
        outs = self.decoder(list(features), xyzr, query)
        return tuple(t for pair in outs for t in pair)


def padded_shape(model: nn.Module, h: int, w: int) -> tuple:
    div = getattr(model.data_preprocessor, 'pad_size_divisor', 1) or 1
    return (-(-h // div) * div, -(-w // div) * div)


def random_features(model: nn.Module, batch: int, h: int,
                    w: int) -> List[torch.Tensor]:
    """Neck-shaped random maps (B, C, ceil(H/s), ceil(W/s)) per stride."""
    dec = model.decoder
    C = model.neck.gn_out.num_channels  # ChannelMapping: C for all levels
    return [
        torch.randn(batch, C, -(-h // s), -(-w // s))
        for s in dec.featmap_strides
    ]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------
# main analysis
# ---------------------------------------------------------------------------
def analyze(cfg: Config,
            shape=(800, 1333),
            decoder_only: bool = False,
            batch_size: int = 1,
            model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """FLOPs (MACs) and params of the whole model / its parts (``model``:
    ``cfg``'s model, already built; built if None).

    Returns:
        dict: ``input_shape`` (padded H, W), ``rows`` (list of
        ``(name, flops, params)``; flops None when not traced),
        ``decoder_by_operator`` (Counter), ``unsupported_ops`` (Counter)
        and ``decoder_flops`` / ``model_flops`` (ints; model None with
        ``decoder_only``).
    """
    if model is None:
        model = build_model(cfg)
    model.eval()
    h, w = padded_shape(model, *shape)
    torch.manual_seed(0)
    if decoder_only:
        wrapper = _DecoderOnly(model, (h, w))
        inputs = tuple(random_features(model, batch_size, h, w))
        prefix = ''
    else:
        wrapper = _Whole(model)
        inputs = (torch.randn(batch_size, 3, h, w), )
        prefix = 'model.'
    with torch.no_grad():
        analyzer = flop_analyzer(wrapper, inputs)
        by_module = analyzer.by_module()
        dec_ops = analyzer.by_operator(prefix + 'decoder')
        unsupported = analyzer.unsupported_ops()

    def flops(name):
        return int(by_module[prefix + name])

    dec = model.decoder
    rows = []
    if not decoder_only:
        rows.append(('model', int(analyzer.total()), _params(model)))
        for name in ('backbone', 'neck'):
            rows.append((name, flops(name), _params(getattr(model, name))))
    rows.append(('query_generator', flops('query_generator'),
                 _params(model.query_generator)))
    rows.append(('decoder', flops('decoder'), _params(dec)))
    stage_flops = [
        flops(f'decoder.stages.{i}') for i in range(len(dec.stages))
    ]
    rows.append((f'  decoder.stages (x{len(dec.stages)}, summed)',
                 sum(stage_flops), _params(dec.stages)))
    for sub in ('attention', 'sampling', 'ffn'):
        rows.append((f'    stages.*.{sub}',
                     sum(
                         flops(f'decoder.stages.{i}.{sub}')
                         for i in range(len(dec.stages))),
                     sum(_params(getattr(s, sub)) for s in dec.stages)))
    rows.append(('  decoder.mixing (all stages)', flops('decoder.mixing'),
                 _params(dec.mixing)))
    for sub in ('generator', 'out_proj'):
        rows.append((f'    mixing.{sub}', flops(f'decoder.mixing.{sub}'),
                     _params(getattr(dec.mixing, sub))))
    rest = flops('decoder') - sum(stage_flops) - flops('decoder.mixing')
    if rest:
        rows.append(('  decoder (own ops)', rest, None))
    return dict(
        input_shape=(h, w),
        batch_size=batch_size,
        decoder_only=decoder_only,
        rows=rows,
        decoder_flops=flops('decoder'),
        model_flops=None if decoder_only else int(analyzer.total()),
        decoder_by_operator=Counter(dec_ops),
        unsupported_ops=Counter(unsupported))


def _g(x) -> str:
    if x is None:
        return '-'
    if x >= 1e9:
        return f'{x / 1e9:.3f} G'
    if x >= 1e6:
        return f'{x / 1e6:.3f} M'
    if x >= 1e3:
        return f'{x / 1e3:.3f} K'
    return str(int(x))


def format_result(res: Dict[str, Any], description: str = '') -> str:
    h, w = res['input_shape']
    lines = []
    if description:
        lines.append(description)
    what = 'decoder only (random neck features)' if res['decoder_only'] \
        else 'whole model'
    lines.append(f'input: {res["batch_size"]} x 3 x {h} x {w} (padded); '
                 f'{what}; FLOPs = multiply-adds (fvcore convention)')
    header = ('module', 'FLOPs', 'params')
    body = [(n, _g(f), '-' if p is None else f'{p:,}')
            for n, f, p in res['rows']]
    lines.append(text_table(header, body))
    lines.append('')
    lines.append('decoder FLOPs by operator: ' + ', '.join(
        f'{op} {_g(v)}' for op, v in res['decoder_by_operator'].most_common()))
    if res['unsupported_ops']:
        lines.append(
            'not counted (no flop handle; element-wise / indexing): ' +
            ', '.join(f'{op} x{n}'
                      for op, n in sorted(res['unsupported_ops'].items())))
    lines.append(f'decoder FLOPs: {res["decoder_flops"]}')
    if res['model_flops'] is not None:
        lines.append(f'model FLOPs: {res["model_flops"]}')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='FLOPs and params of a detector (whole model, decoder)')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[800, 1333],
        metavar=('H', 'W'),
        help='input image size (default: 800 1333)')
    parser.add_argument(
        '--decoder-only',
        action='store_true',
        help='trace only the query generator + decoder on '
        'random neck features')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--json',
        action='store_true',
        help='also print one JSON line with the numbers')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.decoder.in_points=16')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with config_errors(args.config):
        cfg = load_tool_config(args.config, args.cfg_options)
        model = build_model(cfg)
    res = analyze(cfg, tuple(args.shape), args.decoder_only, args.batch_size,
                  model)
    try:
        from lors_det.models.param_counts import describe_decoder
        desc = describe_decoder(cfg)
    except Exception:  # the description is optional
        desc = ''
    print(args.config)
    print(format_result(res, desc))
    if args.json:
        print(
            json.dumps(
                dict(
                    input_shape=list(res['input_shape']),
                    decoder_flops=res['decoder_flops'],
                    model_flops=res['model_flops'],
                    rows=[
                        dict(name=n.strip(), flops=f, params=p)
                        for n, f, p in res['rows']
                    ])))


if __name__ == '__main__':
    main()
