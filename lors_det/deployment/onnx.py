"""ONNX export of AdaMixer / AdaMixer+LORS inference, and its check in
onnxruntime.

The graph maps a preprocessed batch to the last decoder stage's outputs::

    inputs   images     (B, 3, H, W) float32, normalised and padded as by
                        the config's data_preprocessor
             img_sizes  (B, 2) float32, valid (h, w) of each image in pixels
                        of ``images`` (the initial query boxes cover it)
    outputs  cls_logits (B, N, K) per-query class logits (sigmoid -> scores)
             boxes      (B, N, 4) xyxy boxes in pixels of ``images``

Top-k selection and rescaling to the original image are left to the caller
(mmdet's ``predict`` does them after the same computation). With
``dynamic=True`` B, H and W are symbolic: nothing in the graph depends on the
traced image size (the query boxes come from ``img_sizes``, the sampling
scales from the feature maps' shapes).

onnx and onnxruntime are an optional extra: ``pip install -e .[deploy]``.
"""
import io
import time
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

INPUT_NAMES = ['images', 'img_sizes']
OUTPUT_NAMES = ['cls_logits', 'boxes']
DYNAMIC_AXES = {
    'images': {
        0: 'batch',
        2: 'height',
        3: 'width'
    },
    'img_sizes': {
        0: 'batch'
    },
    'cls_logits': {
        0: 'batch'
    },
    'boxes': {
        0: 'batch'
    },
}


class DetectorForExport(nn.Module):
    """The detector's inference as ``(images, img_sizes) -> (cls_logits,
    boxes)`` (shapes in the module docstring), for tracing."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor,
                img_sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.detector.extract_feat(images)
        xyzr, query = self.detector.query_generator.from_sizes(img_sizes)
        cls_logits, boxes = self.detector.decoder(features, xyzr, query)[-1]
        return cls_logits, boxes


def _register_layer_norm_opset17() -> None:
    """ONNX ``LayerNormalization`` (opset 17) requires a scale input, but
    torch exports a parameter-free ``F.layer_norm`` (the mixing's) with an
    empty one, which the checker rejects. Give it a constant ones scale
    (and zero bias) of the normalised shape instead."""
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx import symbolic_helper as sh

    @sh.parse_args('v', 'is', 'v', 'v', 'f', 'b')
    def layer_norm(g, x, normalized_shape, weight, bias, eps, cudnn_enable):
        if sh._is_none(weight):
            weight = g.op('Constant', value_t=torch.ones(normalized_shape))
        if sh._is_none(bias):
            bias = g.op('Constant', value_t=torch.zeros(normalized_shape))
        return g.op(
            'LayerNormalization',
            x,
            weight,
            bias,
            epsilon_f=eps,
            axis_i=-len(normalized_shape))

    register_custom_op_symbolic('aten::layer_norm', layer_norm, 17)


def export_onnx(detector: nn.Module,
                image_hw: Sequence[int],
                batch_size: int = 1,
                dynamic: bool = False,
                opset: int = 16) -> bytes:
    """Trace ``detector`` (in eval mode, float32, CPU) and return the
    checked ONNX model's bytes (the caller writes them).

    Args:
        image_hw: (H, W) of the traced input; with ``dynamic=False`` the
            only size the graph accepts.
        batch_size: B of the traced input (the only one unless dynamic).
        dynamic: make batch, height and width symbolic.
        opset: ONNX opset, 16 or later (``GridSample`` is opset 16;
            tested: 16, 17).
    """
    if opset < 16:
        raise ValueError(f'opset={opset}: grid_sample (the 3D sampling) '
                         'is exported from opset 16; use 16 or later')
    if opset >= 17:
        _register_layer_norm_opset17()
    wrapper = DetectorForExport(detector).eval()
    images, img_sizes = example_inputs(batch_size, image_hw)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (images, img_sizes),
            buffer,
            opset_version=opset,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES if dynamic else None,
            do_constant_folding=True)
    data = buffer.getvalue()
    import onnx
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def example_inputs(batch_size: int,
                   image_hw: Sequence[int],
                   seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random normalised images (B, 3, H, W) and valid sizes (B, 2): image
    i is ``16 * i`` pixels shorter in both sides than the padded batch, so
    a batch mixes sizes as a padded mmdet batch does."""
    H, W = image_hw
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, H, W, generator=generator)
    sizes = [[max(H - 16 * i, 1), max(W - 16 * i, 1)]
             for i in range(batch_size)]
    return images, torch.tensor(sizes, dtype=torch.float32)


def verify_onnx(detector: nn.Module,
                onnx_bytes: bytes,
                cases: Sequence[Tuple[int, Sequence[int]]],
                repeats: int = 0) -> List[Dict]:
    """Run onnxruntime (CPU) and PyTorch on each (batch size, (H, W)) case.

    Returns:
        list[dict]: per case ``batch``, ``hw``, ``max_abs_logits``,
        ``max_abs_boxes`` (max abs differences) and, with ``repeats > 0``,
        median seconds per forward ``ort_s`` and ``torch_s``.
    """
    import onnxruntime as ort

    wrapper = DetectorForExport(detector).eval()
    session = ort.InferenceSession(
        onnx_bytes, providers=['CPUExecutionProvider'])
    rows = []
    for batch, hw in cases:
        images, img_sizes = example_inputs(batch, hw, seed=batch)
        feed = dict(images=images.numpy(), img_sizes=img_sizes.numpy())
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(images, img_sizes)]
        got = session.run(OUTPUT_NAMES, feed)
        row = dict(
            batch=batch,
            hw=tuple(hw),
            max_abs_logits=float(abs(got[0] - ref[0]).max()),
            max_abs_boxes=float(abs(got[1] - ref[1]).max()))
        if repeats > 0:
            row['ort_s'] = _median_time(lambda: session.run(None, feed),
                                        repeats)
            with torch.no_grad():
                row['torch_s'] = _median_time(
                    lambda: wrapper(images, img_sizes), repeats)
        rows.append(row)
    return rows


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
