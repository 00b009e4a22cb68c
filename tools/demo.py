"""End-to-end CPU demo: synthetic data -> train AdaMixer+LORS -> COCO eval.

What ``make demo`` runs::

    python tools/demo.py [--config CONFIG] [--work-dir DIR] [--epochs E]
        [--quick] [--data-root DIR] [--num-train N] [--num-val N]
        [--img-size S] [--threads T] [--score-thr T]

Steps:

1. generate the synthetic shapes dataset (``tools/misc/make_synthetic_coco``;
   skipped when ``DATA_ROOT/meta.json`` already records the same settings);
2. train the config (default ``configs/synthetic/adamixer-lors_tiny_synthetic
   .py``) on CPU with mmengine's ``Runner`` (in-process) into ``WORK_DIR``;
   the log shows the loss and the ETA every logging interval and the val
   COCO mAP after every validation;
3. evaluate the final model on the val split with the config's
   ``CocoMetric`` (pycocotools) and print the COCO summary and the
   parameter table (decoder shared / private split).

Outputs in ``WORK_DIR``: the checkpoints and logs, ``results.json``
(metrics, val history, parameter counts, wall times, settings, config),
``curves.png`` (train loss per logged iteration and val mAP / AP50 per
validation, read from mmengine's ``vis_data/scalars.json``) and
``detections.png`` (val images with the predicted boxes above
``--score-thr``, class and score, next to the ground truth).

The data root, the dataset size and the schedule are the demo's; the model
is the config's. ``--quick`` is a smoke run (tiny dataset in
``WORK_DIR/data``, a few iterations) for tests. Exits non-zero on failure.
"""
import argparse
import contextlib
import io
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
import traceback
from typing import Dict, List, Sequence

_REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

DEFAULT_CONFIG = 'configs/synthetic/adamixer-lors_tiny_synthetic.py'
MAKE_DATA = osp.join(_REPO_ROOT, 'tools', 'misc', 'make_synthetic_coco.py')
COUNT_PARAMS = osp.join(_REPO_ROOT, 'tools', 'analysis', 'count_params.py')

# the demo's dataset: more training images than the generator's default
# (64) so that a short schedule generalises; val stays a separate split
DEMO_DATA = dict(num_train=1024, num_val=64, img_size=128)
QUICK_DATA = dict(num_train=8, num_val=4, img_size=64)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Train + evaluate AdaMixer+LORS on synthetic shapes '
        '(CPU demo)')
    p.add_argument('--config', default=DEFAULT_CONFIG)
    p.add_argument('--work-dir', default=None,
                   help='default: work_dirs/demo (work_dirs/demo_quick with '
                   '--quick)')
    p.add_argument('--epochs', type=int, default=None,
                   help="override the config's max_epochs (LR milestones "
                   'are scaled with it)')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: tiny dataset in WORK_DIR/data, one '
                   'epoch of 2 iterations')
    p.add_argument('--data-root', default=None,
                   help='synthetic dataset root (default: '
                   'data/synthetic_demo, or WORK_DIR/data with --quick)')
    p.add_argument('--num-train', type=int, default=None)
    p.add_argument('--num-val', type=int, default=None)
    p.add_argument('--img-size', type=int, default=None)
    p.add_argument('--threads', type=int, default=None,
                   help='torch intra-op threads (default: all cores, or 1 '
                   'when the load average says other jobs keep the cores '
                   'busy: the many small decoder ops are then 2-3x faster '
                   'single-threaded; 1 with --quick; OMP_NUM_THREADS wins)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='score threshold of detections.png')
    p.add_argument('--num-vis', type=int, default=8,
                   help='val images in detections.png')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    sizes = QUICK_DATA if args.quick else DEMO_DATA
    for k, v in sizes.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.work_dir is None:
        args.work_dir = 'work_dirs/demo_quick' if args.quick \
            else 'work_dirs/demo'
    if args.data_root is None:
        args.data_root = osp.join(args.work_dir, 'data') if args.quick \
            else 'data/synthetic_demo'
    if args.epochs is not None and args.epochs <= 0:
        p.error('--epochs must be positive')
    return args


def log(msg: str) -> None:
    print(f'[demo] {msg}', flush=True)


def default_threads(quick: bool) -> int:
    """All cores unless other jobs keep them busy, else 1.

    Measured on 2 cores (batch of 4): 0.38 s/iteration with 2 threads vs
    0.52 s with 1 when the machine is nearly idle, but 2.6 s vs 1.0 s under
    a load average of ~8 (OpenMP threads waiting for a busy core make the
    decoder's many small ops several times slower).
    """
    cores = os.cpu_count() or 1
    if os.environ.get('OMP_NUM_THREADS', '').isdigit():  # the user's choice
        return max(1, int(os.environ['OMP_NUM_THREADS']))
    if quick or cores == 1:
        return 1
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return cores if busy < cores - 0.5 else 1


# ---------------------------------------------------------------------------
# 1. data
# ---------------------------------------------------------------------------
def make_data(args) -> None:
    """Generate the dataset unless DATA_ROOT already holds these settings."""
    cmd = [sys.executable, MAKE_DATA, '--out', args.data_root,
           '--num-train', str(args.num_train), '--num-val',
           str(args.num_val), '--img-size', str(args.img_size),
           '--seed', str(args.seed)]
    log('dataset: ' + ' '.join(cmd[1:]))
    subprocess.run(cmd, check=True, cwd=os.getcwd())


# ---------------------------------------------------------------------------
# 2. config
# ---------------------------------------------------------------------------
def _scale_milestones(schedulers, old_epochs: int, new_epochs: int) -> None:
    for s in schedulers:
        if not s.get('by_epoch', True):
            continue
        if 'milestones' in s:
            s['milestones'] = sorted({
                max(1, min(new_epochs, round(m * new_epochs / old_epochs)))
                for m in s['milestones']})
        if s.get('end', None) == old_epochs:
            s['end'] = new_epochs


def build_cfg(args):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    root = osp.abspath(args.data_root).rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[key].dataset
        while 'dataset' in ds:  # wrappers (RepeatDataset, ...)
            ds = ds.dataset
        ds.data_root = root
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = root + 'annotations/instances_val.json'
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    cfg.launcher = 'none'
    old_epochs = cfg.train_cfg.get('max_epochs')
    if args.quick:
        # a few iterations: 1 epoch of the tiny dataset, validate at its end
        epochs = args.epochs or 1
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0,
                 end=2)
        ]
        cfg.train_cfg.max_epochs = epochs
        cfg.train_cfg.val_interval = 1
        cfg.default_hooks.logger.interval = 1
        cfg.default_hooks.checkpoint.interval = epochs
    elif args.epochs is not None:
        _scale_milestones(cfg.param_scheduler, old_epochs, args.epochs)
        cfg.train_cfg.max_epochs = args.epochs
        cfg.train_cfg.val_interval = min(cfg.train_cfg.get(
            'val_interval', 1), args.epochs)
        cfg.default_hooks.checkpoint.interval = args.epochs
    # keep only the final checkpoint (the demo evaluates it)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    return cfg


# ---------------------------------------------------------------------------
# 3. evaluation helpers
# ---------------------------------------------------------------------------
class _Tee(io.TextIOBase):
    """Write to several streams (to keep pycocotools' printed summary)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def _collector_cls():
    from mmengine.evaluator import BaseMetric

    class PredictionCollector(BaseMetric):
        """Keeps every test prediction in memory (for detections.png)."""
        default_prefix = 'demo'

        def __init__(self):
            super().__init__(collect_device='cpu')
            self.predictions: List[dict] = []

        def process(self, data_batch, data_samples: Sequence[dict]) -> None:
            for s in data_samples:
                pred = s['pred_instances']
                self.results.append(dict(
                    img_id=s['img_id'], img_path=s['img_path'],
                    bboxes=pred['bboxes'].cpu().numpy(),
                    scores=pred['scores'].cpu().numpy(),
                    labels=pred['labels'].cpu().numpy()))

        def compute_metrics(self, results: list) -> Dict[str, float]:
            self.predictions = list(results)
            return {}

    return PredictionCollector


def coco_summary_lines(text: str) -> List[str]:
    """The 12 ``Average Precision/Recall`` lines of pycocotools' summary."""
    return [ln for ln in text.splitlines()
            if ln.lstrip().startswith(('Average Precision',
                                       'Average Recall'))][-12:]


def param_table(model, cfg, config_path: str):
    """(text table, json summary) of the parameter counts, from
    ``tools/analysis/count_params.py`` (the one table formatter)."""
    text = subprocess.run(
        [sys.executable, COUNT_PARAMS, config_path],
        check=True, capture_output=True, text=True).stdout
    js = subprocess.run(
        [sys.executable, COUNT_PARAMS, config_path, '--json'],
        check=True, capture_output=True, text=True).stdout
    return text.strip(), json.loads(js.strip().splitlines()[-1])


def read_scalars(log_dir: str):
    """Train records (iter, loss, lr) and val records from scalars.json."""
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    train, val = [], []
    if not osp.isfile(path):
        return train, val
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if 'coco/bbox_mAP' in rec:
                val.append(rec)
            elif 'loss' in rec:
                train.append(rec)
    return train, val


def plot_curves(train, val, iters_per_epoch: int, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        it = [r['iter'] for r in train]
        ax1.plot(it, [r['loss'] for r in train], label='total loss')
        last = [k for k in train[-1] if k.endswith('.loss_cls')]
        if last:  # the last stage's losses
            stage = sorted(last)[-1].split('.')[0]
            for name in ('loss_cls', 'loss_bbox', 'loss_iou'):
                key = f'{stage}.{name}'
                ax1.plot(it, [r.get(key, float('nan')) for r in train],
                         lw=1, label=key)
        ax1.set_yscale('log')
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('loss (mean over the logging window)')
    ax1.set_title('training loss')
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if val:
        x = [r.get('step', i + 1) for i, r in enumerate(val)]
        ax2.plot(x, [r['coco/bbox_mAP'] for r in val], 'o-', label='mAP')
        ax2.plot(x, [r['coco/bbox_mAP_50'] for r in val], 's-',
                 label='AP50')
        ax2.set_ylim(0, 1)
    ax2.set_xlabel(f'epoch ({iters_per_epoch} iterations each)')
    ax2.set_ylabel('COCO bbox AP (val)')
    ax2.set_title('validation')
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_detections(predictions: List[dict], ann_file: str,
                    classes: Sequence[str], score_thr: float, num: int,
                    out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmcv import imread
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    cat_ids = sorted(coco.getCatIds())
    preds = sorted(predictions, key=lambda p: p['img_id'])[:num]
    cols = 2  # image pairs per row
    rows = max(1, -(-len(preds) // cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4 * cols * 2 / 1.6,
                                                      2.6 * rows),
                             squeeze=False)
    colours = plt.get_cmap('tab10')
    for ax in axes.flat:
        ax.set_axis_off()
    for i, p in enumerate(preds):
        img = imread(p['img_path'], channel_order='rgb')
        row, col = i // cols, 2 * (i % cols)
        ax_p, ax_g = axes[row, col], axes[row, col + 1]
        keep = p['scores'] >= score_thr
        ax_p.imshow(img)
        ax_p.set_title(f'pred (score>={score_thr:g}): {int(keep.sum())}',
                       fontsize=8)
        for box, s, lab in zip(p['bboxes'][keep], p['scores'][keep],
                               p['labels'][keep]):
            x1, y1, x2, y2 = box
            c = colours(int(lab) % 10)
            ax_p.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1,
                                         fill=False, color=c, lw=1.5))
            ax_p.text(x1, y1, f'{classes[int(lab)]} {s:.2f}', fontsize=6,
                      color='black', va='bottom',
                      bbox=dict(facecolor=c, alpha=0.8, pad=0.5, lw=0))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[p['img_id']]))
        ax_g.imshow(img)
        ax_g.set_title(f'ground truth: {len(anns)}', fontsize=8)
        for a in anns:
            x, y, w, h = a['bbox']
            lab = cat_ids.index(a['category_id'])
            c = colours(lab % 10)
            ax_g.add_patch(plt.Rectangle((x, y), w, h, fill=False, color=c,
                                         lw=1.5))
            ax_g.text(x, y, classes[lab], fontsize=6, color='black',
                      va='bottom',
                      bbox=dict(facecolor=c, alpha=0.8, pad=0.5, lw=0))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def run(args) -> Dict[str, object]:
    import torch
    t_start, cpu_start = time.time(), time.process_time()
    threads = args.threads or default_threads(args.quick)
    torch.set_num_threads(threads)
    log(f'torch {torch.__version__}, {threads} intra-op thread(s), '
        f'{os.cpu_count()} cores visible')

    make_data(args)
    t_data = time.time()

    import lors_det  # noqa: F401  (registers the plugin's modules)
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner
    register_all_modules(init_default_scope=False)

    cfg = build_cfg(args)
    os.makedirs(args.work_dir, exist_ok=True)
    runner = Runner.from_cfg(cfg)
    iters_per_epoch = len(runner.train_dataloader)
    log(f'training {args.config} for {cfg.train_cfg.max_epochs} epoch(s) '
        f'x {iters_per_epoch} iterations (batch '
        f'{cfg.train_dataloader.batch_size}) into {args.work_dir}')
    runner.train()
    t_train = time.time()

    # final evaluation on the val split (the config's CocoMetric), keeping
    # the predictions for the figure and pycocotools' printed summary
    collector = _collector_cls()()
    runner.test_evaluator.metrics.append(collector)
    buf = io.StringIO()
    log('evaluating the final model on the val split (pycocotools)')
    with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
        metrics = runner.test()
    t_eval = time.time()
    metrics = {k: float(v) for k, v in metrics.items()}
    summary = coco_summary_lines(buf.getvalue())

    model = runner.model.module if hasattr(runner.model,
                                           'module') else runner.model
    table, params = param_table(model, cfg, args.config)

    train_recs, val_recs = read_scalars(runner.log_dir)
    curves = osp.join(args.work_dir, 'curves.png')
    plot_curves(train_recs, val_recs, iters_per_epoch, curves)
    classes = runner.test_dataloader.dataset.metainfo['classes']
    dets = osp.join(args.work_dir, 'detections.png')
    plot_detections(collector.predictions, cfg.test_evaluator.ann_file,
                    classes, args.score_thr, args.num_vis, dets)
    t_end = time.time()

    cfg_dump = osp.join(args.work_dir, 'demo_config.py')
    cfg.dump(cfg_dump)
    results = dict(
        metrics=metrics,
        val_history=[{k: v for k, v in r.items()
                      if k.startswith('coco/') or k == 'step'}
                     for r in val_recs],
        params=params,
        wall_time_s=dict(
            total=round(t_end - t_start, 1),
            data=round(t_data - t_start, 1),
            train=round(t_train - t_data, 1),
            eval=round(t_eval - t_train, 1),
            report=round(t_end - t_eval, 1),
            # CPU seconds of this process (all its threads): about the wall
            # time the run would take single-threaded on an idle machine
            process_cpu=round(time.process_time() - cpu_start, 1)),
        config=dict(
            file=args.config,
            dumped=cfg_dump,
            data_root=args.data_root,
            dataset=dict(num_train=args.num_train, num_val=args.num_val,
                         img_size=args.img_size, seed=args.seed),
            max_epochs=cfg.train_cfg.max_epochs,
            iters_per_epoch=iters_per_epoch,
            batch_size=cfg.train_dataloader.batch_size,
            lr=cfg.optim_wrapper.optimizer.get('lr'),
            quick=args.quick,
            threads=threads,
            full=cfg.to_dict()),
        environment=dict(python=platform.python_version(),
                         torch=torch.__version__, machine=platform.machine(),
                         cpu_count=os.cpu_count()),
        coco_summary=summary,
        param_table=table,
        files=dict(curves=curves, detections=dets, log_dir=runner.log_dir))
    out = osp.join(args.work_dir, 'results.json')
    with open(out, 'w') as f:
        json.dump(results, f, indent=2, default=str)

    print()
    print('=' * 78)
    print(f'AdaMixer+LORS demo: {args.config}')
    print(f'val split: {args.num_val} images ({args.data_root}); '
          f'{cfg.train_cfg.max_epochs} epochs x {iters_per_epoch} iterations '
          f'on {threads} CPU thread(s); wall time '
          f'{results["wall_time_s"]["total"]:.0f} s '
          f'(train {results["wall_time_s"]["train"]:.0f} s, process CPU '
          f'{results["wall_time_s"]["process_cpu"]:.0f} s)')
    print('-' * 78)
    print('COCO bbox evaluation (pycocotools):')
    print('\n'.join(summary) if summary else json.dumps(metrics, indent=1))
    print('-' * 78)
    print('parameters:')
    print(table)
    print('-' * 78)
    print(f"bbox mAP {metrics.get('coco/bbox_mAP', float('nan')):.3f}  "
          f"AP50 {metrics.get('coco/bbox_mAP_50', float('nan')):.3f}  "
          f"AP75 {metrics.get('coco/bbox_mAP_75', float('nan')):.3f}")
    print(f'wrote {out}, {curves}, {dets}')
    print('=' * 78)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: config file does not exist: {args.config}',
              file=sys.stderr)
        return 2
    try:
        run(args)
    except KeyboardInterrupt:
        print('[demo] interrupted', file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print('[demo] FAILED', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
