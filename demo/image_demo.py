"""Detect objects in images with mmdet's ``DetInferencer``.

    python demo/image_demo.py IMAGE CONFIG --weights CKPT [--out-dir DIR]
        [--device cpu] [--score-thr 0.3] [--merge-lors]

IMAGE is a file or a folder. Writes ``DIR/vis/<image>`` (drawn detections)
and ``DIR/preds/<image>.json`` (mmdet's inferencer layout). The checkpoint is
read by :func:`lors_det.engine.checkpoint.load_weights` (the project's one
reader: no code runs from the file) -- the inferencer is built without
weights and the checked weights loaded into it; class names come from the
checkpoint's ``meta.dataset_meta`` when it has them, else from the config's
test dataset.
"""
import argparse
import os.path as osp
import sys
import warnings

from mmdet.apis import DetInferencer

import lors_det  # noqa: F401  (registers the plugin)
from lors_det.engine.checkpoint import CheckpointError
from lors_det.engine.weights import load_weights


def build_inferencer(config: str,
                     weights: str,
                     device: str = 'cpu',
                     merge_lors: bool = False) -> DetInferencer:
    """A ``DetInferencer`` with ``weights`` loaded through our reader."""
    with warnings.catch_warnings():
        # it warns that no checkpoint is loaded: we load it just below
        warnings.filterwarnings(
            'ignore',
            message='.*(Checkpoint is not '
            'loaded|weights is None).*')
        inferencer = DetInferencer(
            model=config, weights=None, device=device, show_progress=False)
    model = inferencer.model
    checkpoint = load_weights(model, weights, config=config)
    meta = (checkpoint.get('meta') or {}).get('dataset_meta')
    if not meta:  # the classes of the config's test set
        meta = inferencer.cfg.test_dataloader.dataset.get('metainfo')
    if meta:
        palette = model.dataset_meta.get('palette')
        model.dataset_meta = {k.lower(): v for k, v in meta.items()}
        model.dataset_meta.setdefault('palette', palette or 'random')
        inferencer.visualizer.dataset_meta = model.dataset_meta
    model.eval()
    if merge_lors:
        model.merge_lors()
    return inferencer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image', help='image file or folder')
    parser.add_argument('config')
    parser.add_argument('--weights', required=True, help='checkpoint')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument(
        '--merge-lors',
        action='store_true',
        help='fold LORS into dense per-stage weights')
    args = parser.parse_args()
    for path in (args.image, args.config, args.weights):
        if not osp.exists(path):
            parser.error(f'does not exist: {path}')
    try:
        inferencer = build_inferencer(args.config, args.weights, args.device,
                                      args.merge_lors)
    except (ValueError, CheckpointError, OSError) as e:
        sys.exit(f'error: {e}')
    inferencer(
        args.image,
        out_dir=args.out_dir,
        pred_score_thr=args.score_thr,
        no_save_pred=False)
    print(f'results in {args.out_dir}/vis and {args.out_dir}/preds')


if __name__ == '__main__':
    main()
