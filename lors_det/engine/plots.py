"""Pictures of a training run: loss / mAP curves and detections.

Used by ``tools/demo.py`` (``curves.png``, ``detections.png``) and
``tools/analysis/plot_curves.py``. Plain matplotlib without pyplot (no
global backend or figure state) and without seaborn, which mmdet's
``analyze_logs.py`` needs and this stack lacks.

The curves come from mmengine's ``vis_data/scalars.json`` (written by the
``LocalVisBackend`` of mmdet's default runtime): one JSON record per line;
train records hold ``loss`` (mean over the logging window), the loss terms
(``s5.loss_cls``, ...) and ``step`` (the iteration); validation records hold
``coco/bbox_mAP``, ``coco/bbox_mAP_50``, ... and ``step`` (the epoch).
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

SCALARS = osp.join('vis_data', 'scalars.json')
VAL_KEY = 'coco/bbox_mAP'


def find_scalars(path: str) -> str:
    """The ``scalars.json`` of a run.

    Args:
        path (str): the file itself, a run's log dir (``WORK_DIR/<timestamp>``)
            or a work dir (its newest ``<timestamp>/vis_data/scalars.json``).

    Raises:
        FileNotFoundError: naming the paths looked at.
    """
    if osp.isfile(path):
        return path
    if osp.isfile(osp.join(path, SCALARS)):
        return osp.join(path, SCALARS)
    # timestamped run dirs (YYYYMMDD_HHMMSS) sort in time order
    runs = sorted(glob.glob(osp.join(glob.escape(path), '*', SCALARS)))
    if runs:
        return runs[-1]
    raise FileNotFoundError(
        f"no mmengine scalars file: neither '{osp.join(path, SCALARS)}' nor "
        f"'{osp.join(path, '*', SCALARS)}' exists (a run writes it at its "
        'first logging interval, with the LocalVisBackend)')


def read_scalars(path: str) -> Tuple[List[dict], List[dict]]:
    """(train records, validation records) of a ``scalars.json``."""
    train, val = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{lineno}: not a JSON record '
                                 f'({err})') from None
            if VAL_KEY in rec:
                val.append(rec)
            elif 'loss' in rec:
                train.append(rec)
    return train, val


def plot_curves(train: Sequence[dict],
                val: Sequence[dict],
                out: str,
                title: str = '') -> None:
    """Write ``out`` (PNG): train losses per logged iteration (log scale,
    the total and the last stage's terms) and val mAP / AP50 per epoch."""
    if not train and not val:
        raise ValueError(f"no train 'loss' or val '{VAL_KEY}' records to "
                         f'plot into {out}')
    fig = Figure(figsize=(11, 4), layout='tight')
    ax1, ax2 = fig.subplots(1, 2)
    if train:
        it = [r['step'] for r in train]
        ax1.plot(it, [r['loss'] for r in train], label='total loss')
        stages = sorted(
            (k.split('.')[0] for k in train[-1] if k.endswith('.loss_cls')),
            key=lambda s: (len(s), s))  # ['s0', ..., 's5']
        for key in [
                f'{stages[-1]}.{name}'
                for name in ('loss_cls', 'loss_bbox', 'loss_iou')
        ] if stages else []:
            ax1.plot(it, [r.get(key, np.nan) for r in train], lw=1, label=key)
        ax1.set_yscale('log')
    ax1.set(
        xlabel='iteration',
        ylabel='loss (mean over the logging window)',
        title=f'{title} training loss'.strip())
    if val:
        epochs = [r['step'] for r in val]
        ax2.plot(epochs, [r[VAL_KEY] for r in val], 'o-', label='mAP')
        ax2.plot(epochs, [r[VAL_KEY + '_50'] for r in val], 's-', label='AP50')
        ax2.set_ylim(0, 1)
    ax2.set(
        xlabel='epoch',
        ylabel='COCO bbox AP (val)',
        title=f'{title} validation'.strip())
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.savefig(out, dpi=100)


def _draw_box(ax, xywh, text: str, colour) -> None:
    x, y, w, h = xywh
    ax.add_patch(Rectangle((x, y), w, h, fill=False, color=colour, lw=1.5))
    ax.text(
        x,
        y,
        text,
        fontsize=6,
        color='black',
        va='bottom',
        bbox=dict(facecolor=colour, alpha=0.8, pad=0.5, lw=0))


def plot_detections(ann_file: str,
                    img_dir: str,
                    det_file: str,
                    score_thr: float,
                    out: str,
                    num: int = 8) -> None:
    """Write ``out`` (PNG): the first ``num`` images of a COCO annotation
    file, each one's predictions next to its ground truth.

    Args:
        ann_file (str): COCO annotation file (images, categories, boxes).
        img_dir (str): the directory its ``file_name`` entries are in.
        det_file (str): COCO results file: a list of ``image_id``,
            ``category_id``, ``bbox`` [x, y, w, h] (image pixels) and
            ``score`` in [0, 1], as mmdet's ``CocoMetric`` writes it
            (``<outfile_prefix>.bbox.json``).
        score_thr (float): predictions below it are not drawn.
    """
    with open(ann_file) as f:
        coco = json.load(f)
    with open(det_file) as f:
        dets = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    colour_of = {
        cat: colormaps['tab10'](i % 10)
        for i, cat in enumerate(sorted(names))
    }
    boxes: Dict[Tuple[str, int], List[dict]] = {}
    for kind, records in (('gt', coco['annotations']), ('pred', dets)):
        for r in records:
            if kind == 'gt' or r['score'] >= score_thr:
                boxes.setdefault((kind, r['image_id']), []).append(r)
    images = sorted(coco['images'], key=lambda im: im['id'])[:num]
    cols = 2  # (prediction, ground truth) pairs per row
    rows = max(1, -(-len(images) // cols))
    fig = Figure(figsize=(5 * cols, 2.6 * rows), layout='tight')
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, im in enumerate(images):
        path = osp.join(img_dir, im['file_name'])
        img = cv2.imread(path)
        if img is None:
            raise FileNotFoundError(f"cannot read image '{path}'")
        pair = axes[i // cols, 2 * (i % cols):2 * (i % cols) + 2]
        for ax, kind in zip(pair, ('pred', 'gt')):
            found = boxes.get((kind, im['id']), [])
            ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            ax.set_title(
                f'pred (score>={score_thr:g}): {len(found)}'
                if kind == 'pred' else f'ground truth: {len(found)}',
                fontsize=8)
            for r in found:
                text = names[r['category_id']] + (f" {r['score']:.2f}"
                                                  if kind == 'pred' else '')
                _draw_box(ax, r['bbox'], text, colour_of[r['category_id']])
    fig.savefig(out, dpi=100)
