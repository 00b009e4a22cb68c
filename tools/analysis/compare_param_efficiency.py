"""Small CPU comparison of parameter-efficient AdaMixer variants.

Trains, with mmengine's Runner and ONE schedule for all, on the synthetic
shapes data (``tools/misc/make_synthetic_coco.py``):

* AdaMixer                 configs/synthetic/adamixer_tiny_synthetic.py
* AdaMixer+LORS            configs/synthetic/adamixer-lors_tiny_synthetic.py
* AdaMixer+tied FFN        configs/synthetic/adamixer-tied_tiny_synthetic.py
* AdaMixer+LoRITa          configs/synthetic/adamixer-lorita_tiny_synthetic.py

then compresses the LoRITa checkpoint (``lors_det.lors.lorita_compress``,
as ``tools/model_converters/lorita_compress.py`` does; default: per-layer
energy 0.9 and a global ratio 0.5) and evaluates every model on the val
split with the same config (as ``tools/test.py CONFIG CKPT`` does). Writes a
markdown table (config, decoder params, total params, AP, AP50) to stdout
and to ``--out`` (default ``docs/param_efficiency.md``) with the command,
date and machine.

Usage::

    python tools/analysis/compare_param_efficiency.py [--epochs 8]
        [--work-dir work_dirs/param_efficiency]
        [--out docs/param_efficiency.md]
        [--compress energy=0.9 ratio=0.5] [--only adamixer lorita ...]

This is a small CPU sanity comparison (a ResNet-18 from scratch, 64 training
images at 128 px, a few epochs), NOT a COCO result.
"""
import argparse
import copy
import datetime
import math
import os
import os.path as osp
import platform
import shlex
import sys
import time
from typing import Tuple

import torch
from mmengine.config import Config

_REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

RUNS = (  # key, label, config
    ('adamixer', 'AdaMixer',
     'configs/synthetic/adamixer_tiny_synthetic.py'),
    ('lors', 'AdaMixer+LORS',
     'configs/synthetic/adamixer-lors_tiny_synthetic.py'),
    ('tied', 'AdaMixer+tied FFN',
     'configs/synthetic/adamixer-tied_tiny_synthetic.py'),
    ('lorita', 'AdaMixer+LoRITa (as trained, 3 factors)',
     'configs/synthetic/adamixer-lorita_tiny_synthetic.py'),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=8,
                        help='training epochs for every model (16 '
                        'iterations each with the default data)')
    parser.add_argument('--work-dir', default='work_dirs/param_efficiency')
    parser.add_argument('--out', default='docs/param_efficiency.md',
                        help='markdown file to write ("" for none)')
    parser.add_argument('--data-root', default='data/synthetic',
                        help='synthetic data (generated with the default '
                        'settings if missing)')
    parser.add_argument('--compress', nargs='+',
                        default=['energy=0.9', 'ratio=0.5'],
                        help='LoRITa compressions to evaluate, METHOD=VALUE '
                        'with METHOD in rank, energy, ratio')
    parser.add_argument('--only', nargs='+', choices=[r[0] for r in RUNS],
                        help='train only these (default: all)')
    parser.add_argument('--lr', type=float, default=5e-4,
                        help='AdamW lr for every model (weight decay 1e-4, '
                        'grad-norm clip 1.0 as in the configs)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs <= 0:
        parser.error('--epochs must be positive')
    from lors_det.lors.lorita_compress import LoRITaCompressError, check_value
    args.compress_specs = []
    for spec in args.compress:
        method, _, value = spec.partition('=')
        try:
            value = int(value) if method == 'rank' else float(value)
            args.compress_specs.append(
                (method, check_value(method, value)))
        except (ValueError, LoRITaCompressError) as e:
            parser.error(f'--compress {spec}: {e}')
    return args


def schedule_cfg(cfg: Config, epochs: int, work_dir: str, data_root: str,
                 seed: int, lr: float) -> Tuple[Config, dict]:
    """The same short schedule and data for every model; no validation
    during training (each model is evaluated afterwards)."""
    data_root = data_root.rstrip('/') + '/'
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.launcher = 'none'
    for split, name in (('train', 'train_dataloader'),
                        ('val', 'val_dataloader'),
                        ('val', 'test_dataloader')):
        ds = cfg[name].dataset
        ds.data_root = data_root
        ds.ann_file = f'annotations/instances_{split}.json'
        ds.data_prefix = dict(img=f'{split}/')
    for name in ('val_evaluator', 'test_evaluator'):
        cfg[name].ann_file = data_root + 'annotations/instances_val.json'
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs,
                         val_interval=epochs)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    # the optimiser is set here, not taken from the configs, so that every
    # model gets the same one even if a config changes
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=lr, weight_decay=1e-4),
        clip_grad=dict(max_norm=1.0, norm_type=2))
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=4)
    # the synthetic recipe (lr 2e-4, linear warm-up, x0.1 at 75% and 92% of
    # training) scaled to `epochs`: warm-up 50 iterations or a fifth of the
    # run if that is shorter
    iters = epochs * iters_per_epoch(cfg)
    warmup = max(1, min(50, iters // 5))
    milestones = sorted({max(1, round(epochs * 0.75)),
                         max(1, round(epochs * 0.92))} - {epochs})
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
             end=warmup),
        dict(type='MultiStepLR', begin=0, end=epochs, by_epoch=True,
             milestones=milestones, gamma=0.1)
    ]
    cfg.default_hooks.checkpoint.update(interval=epochs, max_keep_ckpts=1,
                                        by_epoch=True)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=8)
    cfg.load_from = None
    cfg.resume = False
    return cfg, dict(iters=iters, warmup=warmup, milestones=milestones)


def iters_per_epoch(cfg: Config) -> int:
    """Training iterations per epoch: images with at least one box (the
    dataset drops the others, ``filter_empty_gt``) over the batch size."""
    import json
    ds = cfg.train_dataloader.dataset
    with open(osp.join(ds.data_root, ds.ann_file)) as f:
        anns = json.load(f)['annotations']
    images = len({a['image_id'] for a in anns})
    return max(1, math.ceil(images / cfg.train_dataloader.batch_size))


def last_epoch_loss(runner, iters: int):
    """Mean training loss over the last ``iters`` iterations (or None)."""
    try:
        return float(runner.message_hub.get_scalar('train/loss').mean(iters))
    except (KeyError, AttributeError):
        return None


def build_runner(cfg: Config):
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)


def evaluate(cfg: Config, checkpoint: str, work_dir: str, name: str):
    """``tools/test.py CONFIG CHECKPOINT``: a fresh Runner, load_from.

    Returns:
        tuple: metrics and the evaluated model.
    """
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = f'{name}_{time.strftime("%Y%m%d_%H%M%S")}'
    cfg.work_dir = work_dir
    cfg.load_from = checkpoint
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = None
    cfg.param_scheduler = None
    runner = build_runner(cfg)
    metrics = runner.test()
    model = runner.model
    del runner
    return metrics, model


def counts(model):
    from lors_det.models.param_counts import model_param_counts
    c = model_param_counts(model)
    return c['decoder']['total'], c['total']['total']


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return (f'{platform.node()} ({platform.system()} {platform.release()}, '
            f'{cpu}, {os.cpu_count()} CPU cores visible, '
            f'torch.get_num_threads()={torch.get_num_threads()}, no GPU; '
            f'python {platform.python_version()}, torch {torch.__version__})')


def fmt_int(v):
    return f'{v:,}'


def fmt_ap(v):
    return f'{100 * v:.1f}' if v is not None and v >= 0 else 'n/a'


def markdown(rows, args, command, started, elapsed, notes,
             sched) -> str:
    ref = next((r for r in rows if r['key'] == 'adamixer'), None)
    lines = [
        '# Parameter efficiency: a small CPU comparison',
        '',
        '**A small CPU sanity comparison on the synthetic shapes data, NOT '
        'a COCO result.** Every model is trained from scratch (ResNet-18, '
        'C = 64, 20 queries, 6 stages) with the same short schedule '
        f'({args.epochs} epochs on the 64-image split). '
        'Parameter counts are exact; the APs come from one seed, a short '
        'run and 16 val images, so differences of several points are '
        'within noise and do NOT rank the methods -- they show that every '
        'variant trains and evaluates end to end, and how LoRITa '
        'compression changes the model it compresses. The mean training '
        'loss of the last epoch is given as a second, less noisy signal. '
        'The mixing/FFN savings are those of the tiny models '
        '(`docs/params.md` has the COCO-size counts).',
        '',
        f'* command: `{command}`',
        f'* date: {started:%Y-%m-%d %H:%M} (local), wall time '
        f'{elapsed / 60:.1f} min',
        f'* machine: {machine()}',
        f'* data: `{args.data_root}` (tools/misc/make_synthetic_coco.py '
        'defaults: 64 train / 16 val images, 128 px, 3 classes); AP on '
        'the 16 val images (COCO bbox metric)',
        f'* schedule (all models): {args.epochs} epochs = '
        f'{sched["iters"]} iterations of batch 4, AdamW lr {args.lr:g} '
        '(wd 1e-4), '
        f'{sched["warmup"]}-iteration linear warm-up, '
        + (f'x0.1 after epochs {sched["milestones"]}'
           if sched['milestones'] else 'no lr step') +
        f', grad-norm clip 1.0, seed {args.seed}',
        '* LoRITa compression: `lors_det.lors.lorita_compress` (same as '
        '`tools/model_converters/lorita_compress.py`); the compressed '
        'checkpoint is evaluated with the unchanged LoRITa config',
        '',
        '| config | decoder params | total params | AP | AP50 | '
        'train loss (last epoch) |',
        '|---|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        dec = fmt_int(r['decoder'])
        if ref is not None and r is not ref:
            dec += f' ({100 * (r["decoder"] / ref["decoder"] - 1):+.1f}%)'
        loss = f'{r["loss"]:.2f}' if r.get('loss') is not None else '-'
        lines.append(f'| {r["label"]} | {dec} | {fmt_int(r["total"])} | '
                     f'{fmt_ap(r["ap"])} | {fmt_ap(r["ap50"])} | {loss} |')
    lines += ['', 'AP, AP50: COCO bbox mAP x 100 on the val images. '
              'Percentages: decoder parameters relative to AdaMixer.', '']
    lines += [f'* {n}' for n in notes]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    import lors_det  # noqa: F401
    from mmdet.utils import register_all_modules
    from lors_det.engine.convert import compress_checkpoint
    register_all_modules(init_default_scope=False)
    command = 'python ' + ' '.join(
        shlex.quote(a) for a in [osp.relpath(__file__, _REPO_ROOT)] +
        list(sys.argv[1:] if argv is None else argv))
    started, t0 = datetime.datetime.now(), time.time()

    if not osp.isfile(osp.join(args.data_root, 'annotations',
                               'instances_val.json')):
        from lors_det.datasets import make_synthetic_coco
        print(f'generating the synthetic data in {args.data_root}')
        make_synthetic_coco(args.data_root)

    # read every config first: the runs use the configs as they are now,
    # even if one is edited while this script runs
    runs = []
    for key, label, config in RUNS:
        if args.only and key not in args.only:
            continue
        work_dir = osp.join(args.work_dir, key)
        cfg, sched = schedule_cfg(
            Config.fromfile(osp.join(_REPO_ROOT, config)), args.epochs,
            work_dir, args.data_root, args.seed, args.lr)
        runs.append((key, label, config, work_dir, cfg))

    rows, notes = [], []
    for key, label, config, work_dir, cfg in runs:
        cfg.experiment_name = \
            f'{key}_train_{time.strftime("%Y%m%d_%H%M%S")}'
        t = time.time()
        runner = build_runner(cfg)
        runner.train()
        loss = last_epoch_loss(runner, sched['iters'] // args.epochs)
        del runner
        train_min = (time.time() - t) / 60
        ckpt = osp.join(work_dir, f'epoch_{args.epochs}.pth')
        metrics, model = evaluate(cfg, ckpt, osp.join(work_dir, 'test'),
                                  f'{key}_test')
        dec, total = counts(model)
        rows.append(dict(key=key, label=label, decoder=dec, total=total,
                         loss=loss, ap=metrics.get('coco/bbox_mAP'),
                         ap50=metrics.get('coco/bbox_mAP_50')))
        notes.append(f'{label}: `{config}`, trained in {train_min:.1f} min')
        print(f'[{label}] decoder {dec:,} total {total:,} '
              f'AP {fmt_ap(rows[-1]["ap"])} AP50 {fmt_ap(rows[-1]["ap50"])}',
              flush=True)
        if key != 'lorita':
            continue
        for method, value in args.compress_specs:
            tag = f'{method}{value}'
            out = osp.join(work_dir, f'compressed_{tag}.pth')
            # trusted: the checkpoint this script has just written
            report, _ = compress_checkpoint(cfg, ckpt, out, method, value,
                                            trusted=True)
            metrics, model = evaluate(cfg, out,
                                      osp.join(work_dir, f'test_{tag}'),
                                      f'{key}_test_{tag}')
            dec, total = counts(model)
            how = {'energy': f'per-layer energy {value}',
                   'ratio': f'global ratio {value}',
                   'rank': f'rank {value}'}[method]
            rows.append(dict(key=f'lorita_{tag}',
                             label=f'AdaMixer+LoRITa, compressed ({how})',
                             decoder=dec, total=total,
                             ap=metrics.get('coco/bbox_mAP'),
                             ap50=metrics.get('coco/bbox_mAP_50')))
            ffn = [r.rank for r in report.layers if '.ffn.' in r.name]
            proj = [r.rank for r in report.layers if 'out_proj' in r.name]
            notes.append(
                f'LoRITa compressed with `--{method} {value}`: ranks kept '
                f'FFN fc1/fc2 (stages 0-5) {ffn}, mixing out_proj (stages '
                f'0-5) {proj} of max 64; LoRITa layers '
                f'{report.lorita_params_before:,} -> '
                f'{report.lorita_params_after:,} parameters (dense '
                f'equivalent {sum(r.dense_params for r in report.layers):,})')
            print(f'[{rows[-1]["label"]}] decoder {dec:,} total {total:,} '
                  f'AP {fmt_ap(rows[-1]["ap"])} '
                  f'AP50 {fmt_ap(rows[-1]["ap50"])}', flush=True)

    text = markdown(rows, args, command, started, time.time() - t0, notes,
                    sched)
    print(text)
    if args.out:
        if osp.dirname(args.out):
            os.makedirs(osp.dirname(args.out), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text)
        print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
