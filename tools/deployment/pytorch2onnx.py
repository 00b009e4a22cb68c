"""Export AdaMixer / AdaMixer+LORS inference to ONNX.

    python tools/deployment/pytorch2onnx.py CONFIG CKPT OUT.onnx \\
        [--merge-lors] [--dynamic] [--opset 16] [--shape H W] \\
        [--verify [--verify-shapes HxW ...] [--tolerance 1e-2]] [--force]

Graph: ``images`` (B, 3, H, W) preprocessed (normalised, padded) and
``img_sizes`` (B, 2) valid (h, w) -> ``cls_logits`` (B, N, K) and ``boxes``
(B, N, 4) xyxy in pixels of ``images`` (details:
:mod:`lors_det.deployment.onnx`). ``--dynamic`` makes B, H and W symbolic.
``--merge-lors`` calls ``model.merge_lors()`` first (dense per-stage
weights: a bigger file, AdaMixer's cost per stage). ``--verify`` runs
onnxruntime against PyTorch on batch 1 and 2 at each ``--verify-shapes``
size (default: the export size and one other; with a static graph only the
export shape), prints the max abs differences and exits 1 when one exceeds
``--tolerance`` (logits and boxes in pixels alike). The checkpoint is read
by :func:`lors_det.engine.weights.load_weights`; OUT is written
atomically and never over an input or (without ``--force``) an existing
file. Needs the deploy extra: ``pip install -e .[deploy]``.
"""
import argparse
import os.path as osp
import sys

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import lors_det  # noqa: F401  (registers the plugin)
from lors_det.engine.checkpoint import CheckpointError
from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.fileio import atomic_write_bytes, check_outputs
from lors_det.engine.weights import load_weights


def parse_hw(text: str):
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HxW (e.g. 800x1344), got '{text}'")
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive: '{text}'")
    return h, w


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument(
        '--merge-lors',
        action='store_true',
        help='fold LORS into dense per-stage weights first')
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='symbolic batch, height and width')
    parser.add_argument('--opset', type=int, default=16)
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[800, 1344],
        metavar=('H', 'W'),
        help='traced input size')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare onnxruntime with PyTorch')
    parser.add_argument(
        '--verify-shapes',
        type=parse_hw,
        nargs='+',
        help='HxW sizes for --verify')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-2,
        help='max abs difference allowed by --verify')
    parser.add_argument(
        '--repeats',
        type=int,
        default=0,
        help='with --verify: also time N forwards each')
    parser.add_argument(
        '--force', action='store_true', help='replace an existing OUT')
    args = parser.parse_args()
    if not osp.isfile(args.checkpoint):
        parser.error(f'file does not exist: {args.checkpoint}')
    if args.opset < 16:
        parser.error(f'--opset {args.opset}: 16 or later is needed '
                     '(grid_sample is exported from opset 16)')
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        from lors_det.deployment.onnx import export_onnx, verify_onnx
    except ImportError as e:
        sys.exit(f'error: {e}; install the deploy extra: '
                 'pip install -e .[deploy]')
    shape = tuple(args.shape)
    if args.verify_shapes:
        sizes = args.verify_shapes
        if not args.dynamic and any(s != shape for s in sizes):
            parser.error('--verify-shapes other than --shape need --dynamic')
    elif args.dynamic:
        sizes = [shape, (max(shape[0] - 64, 32), shape[1] + 64)]
    else:
        sizes = [shape]
    batches = [1, 2] if args.dynamic else [1]
    register_all_modules()
    with config_errors(args.config):
        cfg = load_tool_config(args.config)
        model = MODELS.build(cfg.model)
    try:
        check_outputs(
            dict(OUT=args.out),
            dict(CONFIG=cfg.filename, CHECKPOINT=args.checkpoint),
            force=args.force)
        load_weights(model, args.checkpoint, config=args.config)
        model.eval()
        if args.merge_lors:
            model.merge_lors()
        data = export_onnx(
            model, shape, dynamic=args.dynamic, opset=args.opset)
        atomic_write_bytes(args.out, data)
    except (ValueError, CheckpointError, OSError) as e:
        sys.exit(f'error: {e}')
    print(f'wrote {args.out} ({len(data) / 1e6:.1f} MB, opset {args.opset}, '
          f'{"dynamic" if args.dynamic else "static"} shapes'
          f'{", LORS merged" if args.merge_lors else ""})')
    if not args.verify:
        return
    cases = [(b, hw) for hw in sizes for b in batches]
    rows = verify_onnx(model, data, cases, repeats=args.repeats)
    worst = 0.0
    for r in rows:
        diff = max(r['max_abs_logits'], r['max_abs_boxes'])
        worst = max(worst, diff)
        line = (f'batch {r["batch"]} {r["hw"][0]}x{r["hw"][1]}: max abs diff '
                f'logits {r["max_abs_logits"]:.2e}, boxes '
                f'{r["max_abs_boxes"]:.2e} px')
        if 'ort_s' in r:
            line += (f'; median s/forward onnxruntime {r["ort_s"]:.4f}, '
                     f'PyTorch {r["torch_s"]:.4f}')
        print(line)
    if worst > args.tolerance:
        sys.exit(f'verify FAILED: max abs difference {worst:.2e} > '
                 f'tolerance {args.tolerance:.0e}')
    print(f'verify passed: max abs difference {worst:.2e} <= tolerance '
          f'{args.tolerance:.0e}')


if __name__ == '__main__':
    main()
