"""Proxy-scale study: parameter-efficient AdaMixer variants over seeds.

Trains every ``configs/proxy`` config (their schedule, their data: the hard
synthetic preset, generated into the config's ``data_root`` from its
``synthetic_data`` if missing) once per seed, evaluates each on the val split
(COCO bbox AP), compresses each LoRITa checkpoint with
``lors_det.engine.convert.compress_checkpoint`` and evaluates that too. Then
reports, per config, mean +- std over seeds of AP and AP50, and for every
config the paired per-seed difference to the AdaMixer baseline with a 95%
t-interval over seeds.

Usage::

    python tools/analysis/compare_param_efficiency.py [--seeds 0 1 2]
        [--jobs 2] [--only adamixer lors ...] [--compress ratio=0.5]
        [--work-dir work_dirs/param_efficiency] [--quick]

``--quick`` merges ``configs/proxy/_base_/quick.py`` over every config (a few
64 px images, two iterations) and uses seeds 0 1: an end-to-end check, its
APs mean nothing. Each (config, seed) runs in its own process (``--jobs`` at
a time, ``--threads`` intra-op threads each) and leaves
``WORK_DIR/KEY/seedS/result.json``; a later call with the same work dir
reuses finished results and refuses a run directory left unfinished.
Writes ``WORK_DIR/study.json`` (every per-seed number) and
``WORK_DIR/study.md`` (the table with command, date, machine, wall time).
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import os.path as osp
import platform
import shlex
import statistics
import subprocess
import sys
import time

from tqdm import tqdm

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QUICK_OVERLAY = 'configs/proxy/_base_/quick.py'
BASELINE = 'adamixer'
RUNS = (  # key, label, config
    ('adamixer', 'AdaMixer 2x16 (baseline)',
     'configs/proxy/adamixer_tiny_proxy.py'),
    ('lors', 'AdaMixer+LORS', 'configs/proxy/adamixer-lors_tiny_proxy.py'),
    ('lors_shared_only', 'LORS shared-only',
     'configs/proxy/adamixer-lors-shared-only_tiny_proxy.py'),
    ('lors_private_only', 'LORS private-only',
     'configs/proxy/adamixer-lors-private-only_tiny_proxy.py'),
    ('tied', 'AdaMixer+tied FFN', 'configs/proxy/adamixer-tied_tiny_proxy.py'),
    ('lorita', 'AdaMixer+LoRITa (as trained)',
     'configs/proxy/adamixer-lorita_tiny_proxy.py'),
)
LORITA_KEY = 'lorita'


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student-t quantile, e.g. 4.303 for 0.95 and df=2."""
    from scipy.stats import t
    return float(t.ppf(0.5 + confidence / 2, df))


def mean_std(values):
    """Mean and sample standard deviation (ddof 1; 0 for one value)."""
    if len(values) == 0:
        raise ValueError('mean_std needs at least one value')
    return statistics.fmean(values), (
        statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """Paired difference ``a - b`` over seeds with a t-interval
    (``scipy.stats.ttest_rel``).

    Args:
        a, b (dict[int, float]): value per seed; only seeds in both count.

    Returns:
        dict: ``n``, ``mean``, ``std`` of the per-seed differences and the
        interval ``low``, ``high`` (None for fewer than 2 pairs).
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError('paired_difference: no seed in common')
    mean, std = mean_std([a[s] - b[s] for s in seeds])
    if len(seeds) < 2:
        return dict(n=1, mean=mean, std=std, low=None, high=None)
    from scipy.stats import ttest_rel
    if std == 0:  # scipy's interval is nan for identical differences
        low = high = mean
    else:
        low, high = ttest_rel([a[s] for s in seeds],
                              [b[s]
                               for s in seeds]).confidence_interval(confidence)
    return dict(
        n=len(seeds), mean=mean, std=std, low=float(low), high=float(high))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        help='training seeds (default 0 1 2; --quick: 0 1)')
    parser.add_argument(
        '--only',
        nargs='+',
        choices=[r[0] for r in RUNS],
        help=f'these configs only ({BASELINE} is always '
        'run: it is the reference of the differences)')
    parser.add_argument(
        '--compress',
        nargs='+',
        default=['ratio=0.5'],
        help='LoRITa compressions, METHOD=VALUE with METHOD '
        'in rank, energy, ratio')
    parser.add_argument('--work-dir', default='work_dirs/param_efficiency')
    parser.add_argument(
        '--jobs',
        type=int,
        default=2,
        help='runs at a time (default 2, one per core)')
    parser.add_argument(
        '--threads', type=int, default=1, help='intra-op threads per run')
    parser.add_argument(
        '--quick',
        action='store_true',
        help=f'merge {QUICK_OVERLAY}; seeds 0 1')
    parser.add_argument(
        '--data-root',
        help="use this directory instead of the configs' "
        'data_root (generated there if missing)')
    parser.add_argument(
        '--run', nargs=2, metavar=('KEY', 'SEED'),
        help=argparse.SUPPRESS)  # one worker run
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2]
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds repeats a seed: {args.seeds}')
    if args.jobs < 1 or args.threads < 1:
        parser.error('--jobs and --threads must be >= 1')
    from lors_det.efficient.lorita_compress import (LoRITaCompressError,
                                                    check_value)
    args.compress_specs = []
    for spec in args.compress:
        method, _, value = spec.partition('=')
        try:
            value = int(value) if method == 'rank' else float(value)
            args.compress_specs.append((method, check_value(method, value)))
        except (ValueError, LoRITaCompressError) as e:
            parser.error(f'--compress {spec}: {e}')
    return args


def load_cfg(config: str, quick: bool, data_root=None):
    """A configs/proxy config, with the quick overlay merged if asked and
    its data read from ``data_root`` if given."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    if quick:
        overlay = Config.fromfile(osp.join(REPO_ROOT, QUICK_OVERLAY))
        cfg.merge_from_dict(overlay.to_dict())
    if data_root:
        cfg.data_root = data_root.rstrip('/') + '/'
        for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[name].dataset.data_root = cfg.data_root
        for name in ('val_evaluator', 'test_evaluator'):
            cfg[name].ann_file = (
                cfg.data_root + 'annotations/instances_val.json')
    return cfg


def ensure_data(cfg) -> None:
    """Write the config's synthetic data into its data_root if missing."""
    from lors_det.datasets import make_synthetic_coco
    root, settings = cfg.data_root, dict(cfg.synthetic_data)
    meta = osp.join(root, 'meta.json')
    if osp.isfile(meta):
        with open(meta) as f:
            found = json.load(f)
        if found != settings:
            raise SystemExit(f'error: {root} holds other data ({meta}: '
                             f'{found}, config wants {settings}); remove it')
        return
    print(f'generating {settings} into {root}', flush=True)
    make_synthetic_coco(root, **settings)
    with open(meta, 'w') as f:
        json.dump(settings, f, indent=2, sort_keys=True)


def metric(runner, name: str) -> float:
    return float(runner.message_hub.get_scalar(f'val/coco/{name}').current())


def run_one(args, key: str, seed: int) -> None:
    """Worker: train one (config, seed), evaluate, compress if LoRITa."""
    import torch
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    import lors_det  # noqa: F401
    from lors_det.engine.convert import compress_checkpoint
    from lors_det.models.param_counts import model_param_counts
    register_all_modules(init_default_scope=False)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals make CPU steps many x slower
    label, config = {k: (lab, c) for k, lab, c in RUNS}[key]
    work_dir = osp.join(args.work_dir, key, f'seed{seed}')
    cfg = load_cfg(config, args.quick, args.data_root)
    cfg.work_dir, cfg.launcher, cfg.randomness = work_dir, 'none', dict(
        seed=seed)
    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()  # the configs validate once, after the last epoch
    counts = model_param_counts(runner.model)
    results = [
        dict(
            key=key,
            label=label,
            config=config,
            seed=seed,
            ap=metric(runner, 'bbox_mAP'),
            ap50=metric(runner, 'bbox_mAP_50'),
            decoder_params=counts['decoder']['total'],
            total_params=counts['total']['total'],
            minutes=(time.time() - t0) / 60)
    ]
    del runner
    ckpt = osp.join(work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    for method, value in args.compress_specs if key == LORITA_KEY else ():
        t0, tag = time.time(), f'{method}={value}'
        out = osp.join(work_dir, f'compressed_{method}{value}.pth')
        compress_checkpoint(cfg, ckpt, out, method, value)
        test_cfg = cfg.copy()
        test_cfg.work_dir = osp.join(work_dir, f'test_{method}{value}')
        test_cfg.load_from = out
        test_cfg.train_dataloader = test_cfg.train_cfg = None
        test_cfg.optim_wrapper = test_cfg.param_scheduler = None
        runner = Runner.from_cfg(test_cfg)
        metrics = runner.test()
        counts = model_param_counts(runner.model)
        results.append(
            dict(
                key=f'{key}@{tag}',
                label=f'{label[:-len(" (as trained)")]}, '
                f'compressed ({tag})',
                config=config,
                seed=seed,
                ap=metrics['coco/bbox_mAP'],
                ap50=metrics['coco/bbox_mAP_50'],
                decoder_params=counts['decoder']['total'],
                total_params=counts['total']['total'],
                minutes=(time.time() - t0) / 60))
        del runner
    with open(osp.join(work_dir, 'result.json'), 'w') as f:
        json.dump(results, f, indent=1)


def run_all(args, keys) -> list:
    """Run every (key, seed) not yet finished, ``--jobs`` at a time, seed
    by seed; return the result rows of all finished runs."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO_ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    todo, rows, failed = [], [], []
    for seed in args.seeds:
        for key in keys:
            work_dir = osp.join(args.work_dir, key, f'seed{seed}')
            if osp.isfile(osp.join(work_dir, 'result.json')):
                continue
            if osp.exists(work_dir):
                raise SystemExit(f'error: {work_dir} holds an unfinished run '
                                 '(no result.json); remove it to rerun')
            todo.append((key, seed, work_dir))
    base = [
        sys.executable,
        osp.abspath(__file__), '--work-dir', args.work_dir, '--threads',
        str(args.threads), '--compress', *args.compress
    ] + (['--quick'] if args.quick else []) + (['--data-root', args.data_root]
                                               if args.data_root else [])

    def train(key, seed, work_dir):
        os.makedirs(work_dir)
        with open(osp.join(work_dir, 'study_run.log'), 'w') as log:
            tqdm.write(f'started {key} seed {seed}', file=sys.stdout)
            started = time.time()
            proc = subprocess.run(
                base + ['--run', key, str(seed)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT)
        return proc.returncode, log.name, time.time() - started

    # a thread per running job: each waits on its subprocess, so
    # ThreadPoolExecutor is the pool (the work is in the subprocesses);
    # tqdm's bar (stderr) gives runs done, elapsed time and ETA
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool, \
            tqdm(total=len(todo), unit='run', file=sys.stderr,
                 desc='study') as bar:
        futures = {pool.submit(train, *job): job for job in todo}
        for future in concurrent.futures.as_completed(futures):
            key, seed, _ = futures[future]
            code, log, seconds = future.result()
            state = 'done' if code == 0 else \
                f'FAILED (exit {code}, see {log})'
            if code:
                failed.append((key, seed))
            bar.write(
                f'{state}: {key} seed {seed} in {seconds / 60:.1f} '
                'min',
                file=sys.stdout)
            bar.update()
    for seed in args.seeds:
        for key in keys:
            path = osp.join(args.work_dir, key, f'seed{seed}', 'result.json')
            if osp.isfile(path):
                with open(path) as f:
                    rows += json.load(f)
    if failed:
        print(f'failed runs: {failed}', file=sys.stderr)
    return rows


def summarise(rows) -> list:
    """One entry per config: per-seed APs, mean/std, paired differences."""
    by_key = {}
    for r in rows:
        by_key.setdefault(r['key'], []).append(r)
    ref = {r['seed']: r for r in by_key.get(BASELINE, [])}
    out = []
    for key, runs in by_key.items():
        entry = dict(
            key=key,
            label=runs[0]['label'],
            config=runs[0]['config'],
            decoder_params=runs[0]['decoder_params'],
            total_params=runs[0]['total_params'],
            seeds=[r['seed'] for r in runs],
            minutes=mean_std([r['minutes'] for r in runs])[0])
        for m in ('ap', 'ap50'):
            per_seed = {r['seed']: 100 * r[m] for r in runs}
            entry[m] = [per_seed[s] for s in entry['seeds']]
            entry[f'{m}_mean'], entry[f'{m}_std'] = mean_std(entry[m])
            if key != BASELINE and ref:
                entry[f'{m}_diff'] = paired_difference(
                    per_seed, {s: 100 * r[m]
                               for s, r in ref.items()})
        out.append(entry)
    return out


def machine() -> str:
    import torch
    cpu = platform.machine()
    if osp.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip()
                        for line in f if line.startswith('model name')), cpu)
    return (f'{platform.node()} ({platform.system()} {platform.release()}, '
            f'{cpu}, {os.cpu_count()} CPU cores, no GPU; python '
            f'{platform.python_version()}, torch {torch.__version__})')


def fmt_diff(d) -> str:
    if d is None:
        return '-'
    if d['low'] is None:
        return f'{d["mean"]:+.1f} (1 seed)'
    return f'{d["mean"]:+.1f} [{d["low"]:+.1f}, {d["high"]:+.1f}]'


def table(entries) -> str:
    from lors_det.engine.tables import markdown_table
    ref = next((e for e in entries if e['key'] == BASELINE), None)
    header = ('config', 'decoder params', 'AP', 'AP50',
              'AP - AdaMixer [95% CI]', 'AP50 - AdaMixer [95% CI]',
              'AP per seed')
    rows = []
    for e in entries:
        dec = f'{e["decoder_params"]:,}'
        if ref is not None and e is not ref:
            dec += f' ({100 * (e["decoder_params"] / ref["decoder_params"] - 1):+.0f}%)'  # noqa: E501
        rows.append(
            (e['label'], dec, f'{e["ap_mean"]:.1f} ± {e["ap_std"]:.1f}',
             f'{e["ap50_mean"]:.1f} ± {e["ap50_std"]:.1f}',
             fmt_diff(e.get('ap_diff')), fmt_diff(e.get('ap50_diff')),
             ', '.join(f'{v:.1f}' for v in e['ap'])))
    return markdown_table(header, rows, numeric=(False, ) + (True, ) * 5)


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        return run_one(args, args.run[0], int(args.run[1]))
    command = 'python ' + ' '.join(
        shlex.quote(a)
        for a in [osp.relpath(osp.abspath(__file__), REPO_ROOT)] +
        list(sys.argv[1:] if argv is None else argv))
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.time()
    keys = [
        k for k, _, _ in RUNS
        if k == BASELINE or not args.only or k in args.only
    ]
    for key in keys:  # every config's data, before any run starts
        ensure_data(
            load_cfg(
                dict((k, c) for k, _, c in RUNS)[key], args.quick,
                args.data_root))
    entries = summarise(run_all(args, keys))
    wall = (time.time() - t0) / 60
    header = [
        f'command: `{command}`',
        f'date: {started:%Y-%m-%d %H:%M} UTC, wall time {wall:.1f} '
        f'min ({args.jobs} runs at a time, {args.threads} thread(s) '
        'each)', f'machine: {machine()}',
        f'seeds: {args.seeds}; quick: {args.quick}'
    ]
    text = '\n'.join(f'* {h}' for h in header) + '\n\n' + table(entries)
    print(text)
    with open(osp.join(args.work_dir, 'study.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.work_dir, 'study.json'), 'w') as f:
        json.dump(
            dict(
                command=command,
                started=started.isoformat(),
                wall_minutes=wall,
                seeds=args.seeds,
                quick=args.quick,
                configs=entries),
            f,
            indent=1)
    expected = {
        k
        for k in keys
    } | ({f'{LORITA_KEY}@{m}={v}'
          for m, v in args.compress_specs} if LORITA_KEY in keys else set())
    complete = {
        e['key']
        for e in entries if sorted(e['seeds']) == sorted(args.seeds)
    }
    return 0 if complete == expected else 1


if __name__ == '__main__':
    sys.exit(main())
