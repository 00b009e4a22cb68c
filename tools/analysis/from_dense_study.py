"""Proxy-scale evidence for LORS from a trained dense model.

The table of docs/from_dense.md.

Per seed, with the dense AdaMixer 2x16 runs of
``tools/analysis/compare_param_efficiency.py`` (their ``epoch_4.pth`` and
``result.json``, trained with ``--only adamixer`` if missing):

* ``converted``: the dense checkpoint converted to the proxy LORS config
  (``lors_det.engine.from_dense.convert_dense_checkpoint``), evaluated as is;
* ``finetuned``: that checkpoint fine-tuned with
  ``configs/proxy/adamixer-lors_tiny_proxy_from-dense-ft.py`` (1 epoch);
* ``scratch``: LORS trained from scratch for the same total iterations
  (``configs/proxy/adamixer-lors-5ep_tiny_proxy.py``, 4 + 1 epochs);
* ``dense``: the dense model's own AP (from the study's result), and LORS
  from scratch on the study's 4-epoch schedule if the study ran it.

Usage::

    python tools/analysis/from_dense_study.py [--seeds 0 1 2] [--jobs 2]
        [--dense-work-dir work_dirs/param_efficiency]
        [--work-dir work_dirs/from_dense] [--refine-steps 2]

Each (seed, step) runs in its own process and leaves
``WORK_DIR/seedS/STEP.json``; a later call reuses them. Writes
``WORK_DIR/study.md`` (the table: mean +- std over seeds, paired per-seed
differences with a 95% t-interval) and ``WORK_DIR/study.json``.
"""
import argparse
import datetime
import json
import math
import os
import os.path as osp
import shlex
import subprocess
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DENSE = 'configs/proxy/adamixer_tiny_proxy.py'
LORS = 'configs/proxy/adamixer-lors_tiny_proxy.py'
FINETUNE = 'configs/proxy/adamixer-lors_tiny_proxy_from-dense-ft.py'
SCRATCH = 'configs/proxy/adamixer-lors-5ep_tiny_proxy.py'
STEPS = ('converted', 'finetuned', 'scratch')
LABELS = dict(
    dense='AdaMixer 2x16, dense (4 ep)',
    converted='LORS converted, no training',
    finetuned='LORS converted + fine-tune (1 ep)',
    scratch='LORS from scratch (5 ep)',
    scratch4='LORS from scratch (4 ep, the study\'s schedule)')
EPOCHS = dict(
    dense='4 + 0',
    converted='4 + 0',
    finetuned='4 + 1',
    scratch='0 + 5',
    scratch4='0 + 4')  # dense + LORS training
ROWS = ('dense', 'converted', 'finetuned', 'scratch', 'scratch4')


def mean_std(values):
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean)**2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def paired(a, b):
    """``a - b`` per seed: mean and 95% t-interval (None for one seed)."""
    from scipy.stats import t
    d = [a[s] - b[s] for s in sorted(a) if s in b]
    mean, std = mean_std(d)
    half = float(t.ppf(0.975, len(d) - 1)) * std / math.sqrt(len(d)) \
        if len(d) > 1 else None
    return mean, half


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--dense-work-dir', default='work_dirs/param_efficiency')
    p.add_argument('--work-dir', default='work_dirs/from_dense')
    p.add_argument('--refine-steps', type=int, default=2)
    p.add_argument(
        '--steps',
        nargs='+',
        choices=STEPS,
        default=list(STEPS),
        help='run only these steps (finetuned needs converted)')
    p.add_argument(
        '--run', nargs=2, metavar=('STEP', 'SEED'), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _runner_cfg(config, work_dir, seed):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    cfg.work_dir, cfg.launcher = work_dir, 'none'
    cfg.randomness = dict(seed=seed)
    return cfg


def run_step(args, step, seed):
    """Worker: one step of one seed; writes its json."""
    import torch
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    import lors_det  # noqa: F401
    from lors_det.engine.from_dense import convert_dense_checkpoint
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    wd = osp.join(args.work_dir, f'seed{seed}')
    converted = osp.join(wd, 'converted.pth')
    t0 = time.time()
    out = dict(step=step, seed=seed)
    if step == 'converted':
        dense = osp.join(args.dense_work_dir, 'adamixer', f'seed{seed}',
                         'epoch_4.pth')
        result = convert_dense_checkpoint(
            DENSE,
            dense,
            LORS,
            converted,
            refine_steps=args.refine_steps,
            log=lambda s: None)
        out['convert_s'] = time.time() - t0
        out['energy'] = {
            s.name: [f.energy_kept for f in s.fits]
            for s in result.stacks
        }
        out['rel_error'] = {
            s.name: [f.rel_error for f in s.fits]
            for s in result.stacks
        }
        cfg = _runner_cfg(LORS, osp.join(wd, 'converted_test'), seed)
        cfg.load_from = converted
        cfg.train_dataloader = cfg.train_cfg = None
        cfg.optim_wrapper = cfg.param_scheduler = None
        metrics = Runner.from_cfg(cfg).test()
        out.update(
            ap=metrics['coco/bbox_mAP'], ap50=metrics['coco/bbox_mAP_50'])
    else:
        cfg = _runner_cfg(FINETUNE if step == 'finetuned' else SCRATCH,
                          osp.join(wd, step), seed)
        if step == 'finetuned':
            cfg.load_from = converted
        runner = Runner.from_cfg(cfg)
        runner.train()
        hub = runner.message_hub
        out.update(
            ap=float(hub.get_scalar('val/coco/bbox_mAP').current()),
            ap50=float(hub.get_scalar('val/coco/bbox_mAP_50').current()))
    out['minutes'] = (time.time() - t0) / 60
    with open(osp.join(wd, f'{step}.json'), 'w') as f:
        json.dump(out, f, indent=1)


def run_all(args):
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        CUDA_VISIBLE_DEVICES='')
    base = [
        sys.executable,
        osp.abspath(__file__), '--work-dir', args.work_dir, '--dense-work-dir',
        args.dense_work_dir, '--threads',
        str(args.threads), '--refine-steps',
        str(args.refine_steps)
    ]
    # the cheap steps of every seed first, the 5-epoch trainings last
    queue = [
        (step, seed) for step in ('converted', 'finetuned', 'scratch')
        for seed in args.seeds if step in args.steps if
        not osp.isfile(osp.join(args.work_dir, f'seed{seed}', f'{step}.json'))
    ]
    running, failed = [], []
    while queue or running:
        for item in list(queue):
            if len(running) >= args.jobs:
                break
            step, seed = item
            wd = osp.join(args.work_dir, f'seed{seed}')
            if step == 'finetuned' and not osp.isfile(
                    osp.join(wd, 'converted.json')):
                if ('converted', seed) not in queue and not any(
                        r[2:4] == ('converted', seed) for r in running):
                    queue.remove(item)  # nothing to fine-tune
                    print(
                        f'skipped finetuned seed {seed}: no converted '
                        'checkpoint',
                        flush=True)
                continue
            queue.remove(item)
            os.makedirs(wd, exist_ok=True)
            log = open(osp.join(wd, f'{step}.log'), 'w')
            proc = subprocess.Popen(
                base + ['--run', step, str(seed)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT)
            running.append((proc, log, step, seed, time.time()))
            print(f'started {step} seed {seed}', flush=True)
        time.sleep(1)
        for item in [r for r in running if r[0].poll() is not None]:
            proc, log, step, seed, t0 = item
            running.remove(item)
            log.close()
            print(
                f'{"done" if proc.returncode == 0 else "FAILED"}: {step} '
                f'seed {seed} in {(time.time() - t0) / 60:.1f} min',
                flush=True)
            if proc.returncode:
                failed.append((step, seed))
                queue = [q for q in queue if q != ('finetuned', seed)]
    return failed


def collect(args):
    rows = {k: {} for k in ROWS}
    for seed in args.seeds:
        # the study's own runs: dense, and LORS from scratch if it ran
        # (compare_param_efficiency.py --only lors)
        for key, name in (('dense', 'adamixer'), ('scratch4', 'lors')):
            path = osp.join(args.dense_work_dir, name, f'seed{seed}',
                            'result.json')
            if osp.isfile(path):
                with open(path) as f:
                    r = json.load(f)[0]
                rows[key][seed] = (100 * r['ap'], 100 * r['ap50'])
        for step in STEPS:
            path = osp.join(args.work_dir, f'seed{seed}', f'{step}.json')
            if osp.isfile(path):
                with open(path) as f:
                    r = json.load(f)
                rows[step][seed] = (100 * r['ap'], 100 * r['ap50'])
    return rows


def fmt_diff(a, b, i):
    if not a or not b:
        return '-'
    mean, half = paired({s: v[i]
                         for s, v in a.items()},
                        {s: v[i]
                         for s, v in b.items()})
    if half is None:
        return f'{mean:+.1f}'
    return f'{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]'


def table(rows) -> str:
    from lors_det.engine.tables import markdown_table
    header = ('model', 'epochs dense + LORS', 'AP', 'AP50',
              'AP - dense [95% CI]', 'AP - LORS scratch 5 ep [95% CI]',
              'AP per seed')
    body = []
    for key in ROWS:
        r = rows[key]
        if not r:
            body.append((LABELS[key], EPOCHS[key], 'not run', '', '', '', ''))
            continue
        ap, ap50 = (mean_std([v[i] for v in r.values()]) for i in (0, 1))
        body.append(
            (LABELS[key], EPOCHS[key],
             f'{ap[0]:.1f} ± {ap[1]:.1f}', f'{ap50[0]:.1f} ± {ap50[1]:.1f}',
             fmt_diff(r, rows['dense'], 0) if key != 'dense' else '-',
             fmt_diff(r, rows['scratch'], 0) if key != 'scratch' else '-',
             ', '.join(f'{r[s][0]:.1f}' for s in sorted(r))))
    return markdown_table(header, body, numeric=(False, True, True, True))


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        return run_step(args, args.run[0], int(args.run[1]))
    command = 'python ' + ' '.join(
        shlex.quote(a)
        for a in [osp.relpath(osp.abspath(__file__), REPO_ROOT)] +
        list(sys.argv[1:] if argv is None else argv))
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.time()
    missing = [
        s for s in args.seeds if not osp.isfile(
            osp.join(args.dense_work_dir, 'adamixer', f'seed{s}',
                     'result.json'))
    ]
    if missing:
        subprocess.run([
            sys.executable,
            osp.join(REPO_ROOT, 'tools/analysis/compare_param_efficiency.py'),
            '--only', 'adamixer', '--seeds', *map(str, missing), '--jobs',
            str(args.jobs), '--work-dir', args.dense_work_dir
        ],
                       cwd=REPO_ROOT,
                       check=True)
    failed = run_all(args)
    wall = (time.time() - t0) / 60
    text = (f'* command: `{command}`\n* date: {started:%Y-%m-%d %H:%M} UTC, '
            f'wall time {wall:.1f} min ({args.jobs} runs at a time, '
            f'{args.threads} thread(s) each; dense runs reused if present)\n'
            f'* seeds: {args.seeds}\n\n' + table(collect(args)))
    print(text)
    with open(osp.join(args.work_dir, 'study.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.work_dir, 'study.json'), 'w') as f:
        json.dump(
            dict(
                command=command,
                started=started.isoformat(),
                wall_minutes=wall,
                rows={
                    k: {str(s): v
                        for s, v in r.items()}
                    for k, r in collect(args).items()
                }),
            f,
            indent=1)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
