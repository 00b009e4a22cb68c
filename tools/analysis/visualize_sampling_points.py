"""Draw AdaMixer's adaptive 3D sampling points of a decoder stage.

Usage::

    python tools/analysis/visualize_sampling_points.py CONFIG CHECKPOINT IMAGE
        [--stage S] [--query Q | --topk K] [--out FILE.png]
        [--cfg-options k=v ...]

The detector runs once on IMAGE (the config's test pipeline). A forward hook
on ``decoder.stages[S].sampling`` captures that stage's inputs
``(features, query, xyzr, strides)``; the 3D points are recomputed with the
module's ``sampling_offset_generator`` and
:func:`lors_det.models.layers.make_sample_points`, exactly as the sampling
does. For each chosen query the figure shows

* the query's box at the input of stage S (the box the offsets are relative
  to), labelled with the query's final class and score (last stage),
* its G x P_in sampling points: colour = sampling group, marker size = z
  (log2 of the sampling scale; the legend gives the sizes at the pyramid
  strides, i.e. at which level the point mostly reads), points outside the
  image are drawn faded.

``--query Q`` picks query Q (0 .. N-1); otherwise the ``--topk`` queries with
the highest final score are drawn (default 3). Works with plain AdaMixer and
AdaMixer+LORS configs (the sampling is per stage in both).
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import DictAction

import lors_det  # noqa: F401  (registers the plugin's modules)
from lors_det.engine.checkpoint import CheckpointError
from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.fileio import check_outputs
from lors_det.engine.weights import load_weights
from lors_det.models.layers import make_sample_points, xyzr_to_xyxy


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Visualise the 3D sampling points of a decoder stage')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='image file')
    parser.add_argument(
        '--stage',
        type=int,
        default=-1,
        help='decoder stage (default: the last; negative '
        'counts from the end)')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--query', type=int, help='query index to draw')
    group.add_argument(
        '--topk',
        type=int,
        default=3,
        help='draw the K queries with the highest final '
        'score (default 3)')
    parser.add_argument(
        '--out',
        default='sampling_points.png',
        help='output PNG (default: sampling_points.png)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings (k=v)')
    args = parser.parse_args(argv)
    for name in ('checkpoint', 'image'):
        if not osp.isfile(getattr(args, name)):
            parser.error(f'{name} file does not exist: {getattr(args, name)}')
    if args.topk is not None and args.topk <= 0:
        parser.error('--topk must be positive')
    return args


def capture(model, image: str, stage: int) -> Dict[str, object]:
    """Run the detector on ``image``; return the stage's sampling inputs,
    the recomputed points and the last stage's per-query scores.

    Returns:
        dict: ``points`` (N, G*P, 3) and ``xyzr`` (N, 4) in input pixels,
        ``strides``, ``num_groups``, ``scores`` / ``labels`` (N,) of the last
        stage, ``scale_factor`` (w, h) and the data sample ``result``.
    """
    from mmdet.apis import inference_detector

    decoder = model.decoder
    num_stages = len(decoder.stages)
    if not -num_stages <= stage < num_stages:
        raise ValueError(f'--stage {stage} out of range: the decoder has '
                         f'{num_stages} stages')
    sampling = decoder.stages[stage].sampling
    store: Dict[str, object] = {}

    def sampling_hook(module, args, output):
        features, query, xyzr, strides = args
        store.update(
            query=query.detach(), xyzr=xyzr.detach(), strides=list(strides))

    def last_stage_hook(module, args, output):
        store['cls_score'] = output[0].detach()

    handles = [
        sampling.register_forward_hook(sampling_hook),
        decoder.stages[-1].register_forward_hook(last_stage_hook)
    ]
    try:
        result = inference_detector(model, image)
    finally:
        for h in handles:
            h.remove()
    if 'query' not in store:
        raise RuntimeError('the sampling hook did not fire')
    with torch.no_grad():
        G, P = sampling.num_groups, sampling.in_points
        offset = sampling.sampling_offset_generator(store['query'])
        points = make_sample_points(offset, store['xyzr'], G * P)
    scores, labels = store['cls_score'][0].sigmoid().max(-1)
    return dict(
        points=points[0].cpu(),
        xyzr=store['xyzr'][0].cpu(),
        strides=store['strides'],
        num_groups=G,
        in_points=P,
        scores=scores.cpu(),
        labels=labels.cpu(),
        scale_factor=result.metainfo.get('scale_factor', (1., 1.)),
        result=result)


def choose_queries(scores: torch.Tensor, query=None, topk=3) -> List[int]:
    if query is not None:
        if not 0 <= query < len(scores):
            raise ValueError(f'--query {query} out of range: there are '
                             f'{len(scores)} queries')
        return [query]
    return scores.topk(min(topk, len(scores))).indices.tolist()


def draw(image: str, cap: Dict[str, object], queries: List[int], class_names,
         stage_label: str, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from mmcv import imread

    img = imread(image, channel_order='rgb')
    H, W = img.shape[:2]
    sx, sy = (float(s) for s in cap['scale_factor'])
    scale = np.array([sx, sy])
    strides = cap['strides']
    G, P = cap['num_groups'], cap['in_points']
    zlo, zhi = np.log2(min(strides)) - 1, np.log2(max(strides)) + 1

    def size(z):  # marker area (pt^2) from z = log2(scale in input pixels)
        t = np.clip((np.asarray(z) - zlo) / (zhi - zlo), 0, 1)
        return 6 + 140 * t

    cmap = plt.get_cmap('tab10')
    fig, ax = plt.subplots(figsize=(8, 8 * H / W + 0.6), dpi=100)
    ax.imshow(img)
    placed = []
    for q in queries:
        pts = cap['points'][q].numpy().reshape(G, P, 3)
        box = xyzr_to_xyxy(cap['xyzr'][q]).numpy()
        x1, y1 = box[:2] / scale
        x2, y2 = box[2:] / scale
        ax.add_patch(
            plt.Rectangle((x1, y1),
                          x2 - x1,
                          y2 - y1,
                          fill=False,
                          edgecolor='white',
                          linewidth=1.5))
        label = int(cap['labels'][q])
        name = class_names[label] if label < len(class_names) else label
        # label inside the box's top-left corner (clipped to the image),
        # moved down while it would cover an earlier label
        lx, ly = max(x1, 0.0), max(y1, 0.0)
        while any(
                abs(lx - px) < 0.15 * W and abs(ly - py) < 0.04 * H
                for px, py in placed):
            ly += 0.045 * H
        placed.append((lx, ly))
        ax.text(
            lx + 1,
            ly + 1,
            f'q{q}: {name} {float(cap["scores"][q]):.2f}',
            color='black',
            fontsize=8,
            va='top',
            bbox=dict(facecolor='white', alpha=0.8, pad=1, lw=0))
        for g in range(G):
            xy = pts[g, :, :2] / scale
            inside = ((xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) &
                      (xy[:, 1] < H))
            # z is log2 of the scale in input pixels; shown as is
            s = size(pts[g, :, 2])
            for mask, alpha in ((inside, 0.9), (~inside, 0.25)):
                if mask.any():
                    ax.scatter(
                        xy[mask, 0],
                        xy[mask, 1],
                        s=s[mask],
                        color=cmap(g % 10),
                        alpha=alpha,
                        edgecolors='black',
                        linewidths=0.4)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    handles = [
        Line2D([], [],
               marker='o',
               ls='',
               color=cmap(g % 10),
               markeredgecolor='black',
               label=f'group {g}') for g in range(G)
    ] + [
        Line2D([], [],
               marker='o',
               ls='',
               color='lightgray',
               markeredgecolor='black',
               markersize=float(np.sqrt(size(np.log2(s)))),
               label=f'z = log2({s}) (stride {s})') for s in strides
    ]
    ax.legend(
        handles=handles,
        loc='upper left',
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        frameon=False)
    ax.set_title(
        f'{stage_label}: {G} groups x {P} points per query, '
        f'queries {queries}',
        fontsize=9)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, bbox_inches='tight')
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules

    register_all_modules()
    with config_errors(args.config):
        cfg = load_tool_config(args.config, args.cfg_options)
        model = init_detector(cfg, None, device='cpu')
    try:
        check_outputs(
            dict(OUT=args.out),
            dict(
                CONFIG=cfg.filename,
                CHECKPOINT=args.checkpoint,
                IMAGE=args.image),
            force=True)
        meta = load_weights(
            model, args.checkpoint, config=args.config).get('meta') or {}
    except (ValueError, CheckpointError, OSError) as e:
        sys.exit(f'error: {e}')
    if isinstance(meta.get('dataset_meta'), dict):
        model.dataset_meta = meta['dataset_meta']
    model.to(args.device)
    num_stages = len(model.decoder.stages)
    stage = args.stage % num_stages
    cap = capture(model, args.image, stage)
    queries = choose_queries(cap['scores'], args.query, args.topk)
    classes = (model.dataset_meta or {}).get('classes', ())
    draw(args.image, cap, queries, classes, f'stage {stage} of {num_stages}',
         args.out)
    for q in queries:
        box = xyzr_to_xyxy(cap['xyzr'][q]).tolist()
        z = cap['points'][q][:, 2]
        print(f'query {q}: score {float(cap["scores"][q]):.3f}, label '
              f'{int(cap["labels"][q])}, stage-{stage} box (input px) '
              f'{[round(v, 1) for v in box]}, z in [{float(z.min()):.2f}, '
              f'{float(z.max()):.2f}]')
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
