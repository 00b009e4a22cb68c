"""Speed and memory of the decoder (optionally the whole detector) at COCO
shapes, for several configs side by side.

    python tools/analysis/benchmark.py CONFIG[:merged] [CONFIG ...]
        [--device cpu|cuda] [--amp] [--json] [--whole-model]
        [--batch 2] [--shape 800 1333] [--warmup 2] [--repeats 5]
        [--rounds 1] [--mixing STAGE] [--system-malloc] [--compile]
        [--paired]

Decoder numbers use random neck features of an HxW image (strides 4-32, C
channels), the config's queries and random ground truth (10 boxes per
image), so no backbone or data is needed. Phases: ``forward`` (training
mode, with autograd), ``train`` (loss + backward + grad clip + AdamW step)
and ``infer`` (eval, no grad, top-k post-processing). ``:merged`` after a
config runs ``infer`` after ``model.merge_lors()`` (LORSA and LORST folded
into dense per-stage weights: the same ops as AdaMixer, so its ratio to the
matching AdaMixer config is a check of the machine's noise, not a
speed-up).

Each config runs in its own subprocess so peak memory is its own: CUDA
``max_memory_allocated``; CPU the growth of the resident set's high-water
mark (reset through /proc/self/clear_refs) over the phase. Times are the
median over ``--repeats`` after ``--warmup`` runs, with min and max.

``--mixing STAGE`` times one ``decoder.mixing`` call of that stage instead
(generator, ACM/ASM, output linear and LayerNorm on random sampled
features; ``train`` is forward + backward, no optimizer), e.g. the LORS
stages with K = 1 (stage 0) and K = 3 (stage 5).

``--compile`` times the decoder (or, with ``--mixing``, the mixing) under
``torch.compile`` (default inductor backend: C++/OpenMP on CPU, Triton on a
GPU): its ``forward`` is compiled, so ``loss`` and ``predict`` run the
compiled stages while the matching and the top-k stay eager. Compilation
happens in the warm-up runs (at least one per phase) and is not timed.

``--rounds R`` runs all configs R times, alternating their order, and
reports the median over rounds; the ratios are medians of the per-round
ratios, so slow drifts of a shared machine's load cancel out.

``--paired`` builds all configs in one worker process (one per round) and
times them phase by phase, taking turns call by call (A B C, C B A, ...);
each ratio is the median of the per-turn ratios to the first config. Two
neighbouring calls see the same machine state (load, frequency, heap), so
these ratios resolve a few percent where separate processes differ by
+-10% on a 2-core VM; the ``:merged`` row (true ratio 1.0 for ``infer``)
shows what is left. Peak memory is not measured in this mode (the configs
share the process).

On CPU, the workers keep freed memory in the process (glibc malloc's
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set high), as
PyTorch's CUDA caching allocator does on a GPU. By default glibc returns
every large temporary to the OS when it is freed, and the next call
page-faults it in again: on the development VM a 39 MB tensor (one stage's
generator output) cost 27 ms to allocate and fill, 7 ms when kept, so the
timings measured the kernel's page-fault path and its noise more than the
model. ``--system-malloc`` keeps glibc's default.

On CPU, denormal floats are flushed to zero: the zero-initialised
generators give AdamW denormal moments in the first steps, and x86 CPUs
process those up to 100x slower (GPUs do not), which would charge the
models with more such parameters (AdaMixer) a cost real training does not
pay.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

from lors_det.engine.tables import markdown_table

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STRIDES = (4, 8, 16, 32)
# glibc malloc: no mmap for large blocks, never trim the heap (see above)
RETAINED_MALLOC = dict(
    MALLOC_MMAP_THRESHOLD_=str(2**32), MALLOC_TRIM_THRESHOLD_=str(2**40))


def rss_mb(field: str) -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


class PeakMemory:
    """Peak memory growth (MB) while the block runs."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset VmHWM to the current RSS
            self.start = rss_mb('VmRSS')
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = rss_mb('VmHWM')
        self.mb = peak - self.start


def clock(fn, device):
    """One call of ``fn``, in ms (synchronised on CUDA)."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1000


def timed(fn, device, warmup, repeats):
    for _ in range(warmup):
        fn()
    with PeakMemory(device) as mem:
        times = [clock(fn, device) for _ in range(repeats)]
    return dict(
        ms=statistics.median(times),
        min_ms=min(times),
        max_ms=max(times),
        peak_mb=mem.mb)


def random_batch(model, batch, shape, num_gts, device, gen):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    H, W = shape
    C = model.decoder.stages[0].attention.embed_dim
    feats = [
        torch.randn(
            batch, C, -(-H // s), -(-W // s), device=device, generator=gen)
        for s in STRIDES
    ]
    samples = []
    for _ in range(batch):
        xy = torch.rand(num_gts, 2, device=device, generator=gen) * \
            torch.tensor([W, H], device=device) * 0.7
        wh = torch.rand(num_gts, 2, device=device, generator=gen) * 200 + 16
        s = DetDataSample(
            metainfo=dict(
                img_shape=(H, W), ori_shape=(H, W), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(
                0, 80, (num_gts, ), device=device, generator=gen) %
            model.decoder.stages[0].num_classes)
        samples.append(s)
    images = torch.randn(batch, 3, H, W, device=device, generator=gen)
    return feats, samples, images


def malloc_mode(device_type: str) -> str:
    """'retained' when this CPU process runs with :data:`RETAINED_MALLOC`
    (read from its environment, whoever set it), else 'system'."""
    retained = all(os.environ.get(k) == v for k, v in RETAINED_MALLOC.items())
    return 'retained' if device_type == 'cpu' and retained else 'system'


def parse_spec(spec: str):
    """``CONFIG[:merged]`` -> (config path, merged)."""
    merged = spec.endswith(':merged')
    return (spec[:-len(':merged')] if merged else spec), merged


def phases(spec, args):
    """Build one ``CONFIG[:merged]`` in this process and yield its result
    dict (metadata, filled in as the phases run), then ``(phase, fn,
    (warmup, repeats))`` per phase in order; between two yields the model
    is switched to what the next phase needs (eval, merged)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import lors_det  # noqa: F401
    from lors_det.lors import count_parameters
    register_all_modules()
    path, merged = parse_spec(spec)
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no download: weights do not matter
    device = torch.device(args.device)
    if device.type == 'cpu':
        torch.set_flush_denormal(True)  # see the module docstring
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device)
    decoder = model.decoder
    if args.compile:
        # loss() and predict() call self.forward: compiling the
        # instance's forward compiles what they run; the shapes are fixed
        decoder.forward = torch.compile(decoder.forward, dynamic=False)
    gen = torch.Generator(device=device).manual_seed(0)
    feats, samples, images = random_batch(model, args.batch, args.shape,
                                          args.num_gts, device, gen)
    xyzr, query = model.query_generator([s.metainfo for s in samples])
    query = query.detach()  # decoder inputs, as the neck features
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    amp = torch.autocast(device.type, dtype=dtype, enabled=args.amp)
    optim = torch.optim.AdamW(decoder.parameters(), lr=1e-5)

    def forward():
        with amp:
            decoder(feats, xyzr, query)

    def train_step(module, optimizer, loss_fn):
        optimizer.zero_grad(set_to_none=True)
        with amp:
            loss = sum(loss_fn().values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()

    def infer():
        with torch.no_grad(), amp:
            decoder.predict(feats, xyzr, query, samples, rescale=False)

    res = dict(
        config=osp.relpath(path, REPO),
        merged=merged,
        amp=args.amp,
        compile=args.compile,
        device=str(device),
        batch=args.batch,
        shape=list(args.shape),
        num_queries=model.num_queries,
        malloc=malloc_mode(device.type))
    yield res
    if args.mixing is not None:
        yield from mixing_phases(model, merged, args, device, amp, gen, res)
        return
    runs = (args.warmup, args.repeats)
    decoder.train()
    yield 'forward', forward, runs
    yield 'train', lambda: train_step(
        decoder, optim, lambda: decoder.loss(feats, xyzr, query, samples)
    ), runs
    counts = count_parameters(decoder)
    res['decoder_params'] = counts['total']
    res['decoder_shared'] = counts['shared']
    res['decoder_private'] = counts['private']
    res['optim_state_mb'] = sum(t.numel() * t.element_size()
                                for st in optim.state.values()
                                for t in st.values()
                                if torch.is_tensor(t)) / 2**20
    decoder.eval()
    if merged:
        model.merge_lors()
    yield 'infer', infer, runs
    if args.whole_model:
        model.unmerge_lors()  # training needs the LORS computation
        model.train()
        whole_optim = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-5)
        few = (1, max(1, args.repeats // 2))
        yield 'model_train', lambda: train_step(
            model, whole_optim, lambda: model.loss(images, samples)), few
        model.eval()
        if merged:
            model.merge_lors()  # from the weights just trained

        def model_infer():
            with torch.no_grad(), amp:
                model.predict(images, samples, rescale=False)

        yield 'model_infer', model_infer, few


def measure(spec, args):
    """Benchmark one ``CONFIG[:merged]`` in this process, each phase on
    its own (``timed``: peak memory is the phase's own)."""
    steps = phases(spec, args)
    res = next(steps)
    device = torch.device(args.device)
    for phase, fn, (warmup, repeats) in steps:
        res[phase] = timed(fn, device, warmup, repeats)
    return res


def measure_paired(args):
    """``--paired``: every config in this process, phase by phase; within
    a phase the configs take turns, one call each, in alternating order,
    and each ratio is the median of the per-turn ratios to the first
    config. Neighbouring calls see the same machine state, so the ratios
    resolve smaller differences than configs timed in separate processes;
    peak memory is not measured (the configs share the process)."""
    device = torch.device(args.device)
    if args.compile:  # one compiled graph per config and mode, same code
        torch._dynamo.config.cache_size_limit = max(
            torch._dynamo.config.cache_size_limit, 8 * len(args.configs))
    gens = [phases(spec, args) for spec in args.configs]
    results = [next(g) for g in gens]
    for steps in zip(*gens):
        phase, _, (warmup, repeats) = steps[0]
        for _, fn, _ in steps:
            for _ in range(warmup):
                fn()
        times = [[] for _ in steps]
        for turn in range(repeats):
            order = range(len(steps))
            for i in (reversed(order) if turn % 2 else order):
                times[i].append(clock(steps[i][1], device))
        for res, t in zip(results, times):
            res[phase] = dict(
                ms=statistics.median(t),
                min_ms=min(t),
                max_ms=max(t),
                peak_mb=None,
                ratio=statistics.median(a / b for a, b in zip(t, times[0])))
    return results


def mixing_phases(model, merged, args, device, amp, gen, res):
    """``--mixing STAGE``: one ``decoder.mixing`` call of that stage
    (generator, ACM/ASM, output linear, LayerNorm) on random sampled
    features (B, N, G, P_in, C/G) and queries (B, N, C): ``forward``
    (training mode), ``train`` (forward + backward) and ``infer`` (eval, no
    grad; after ``model.merge_lors()`` for ``:merged``), yielded as
    :func:`phases` yields them; the mixing's counts go into ``res``."""
    mixing, stage = model.decoder.mixing, args.mixing
    if not 0 <= stage < len(mixing.norms):
        sys.exit(f'error: --mixing {stage}: the decoder has stages 0..'
                 f'{len(mixing.norms) - 1}')
    C, G = model.decoder.stages[0].attention.embed_dim, mixing.num_groups
    shape = (args.batch, model.num_queries)
    x = torch.randn(
        *shape, G, mixing.in_points, C // G, device=device, generator=gen)
    call = torch.compile(mixing, dynamic=False) if args.compile else mixing
    query = torch.randn(
        *shape, C, device=device, generator=gen, requires_grad=True)

    def forward():
        with amp:
            return call(x, query, stage)

    def train():
        mixing.zero_grad(set_to_none=True)
        forward().float().square().mean().backward()

    def infer():
        with torch.no_grad():
            forward()

    from lors_det.lors import count_parameters
    factors = getattr(mixing.generator, 'num_factors', None)
    counts = count_parameters(mixing)
    res.update(
        mixing_stage=stage,
        num_factors=factors[stage] if factors else None,
        mixing_params=counts['total'],
        mixing_shared=counts['shared'],
        mixing_private=counts['private'])
    runs = (args.warmup, args.repeats)
    mixing.train()
    yield 'forward', forward, runs
    yield 'train', train, runs
    mixing.eval()
    if merged:
        model.merge_lors()
    yield 'infer', infer, runs


PHASES = ('forward', 'train', 'infer', 'model_train', 'model_infer')


def round_ratio(run, base):
    """One phase's ratio to the first config within one round: the median
    per-turn ratio of a ``--paired`` round, else the ratio of the medians."""
    return run.get('ratio', run['ms'] / base['ms'])


def combine(rounds):
    """Per config: medians over rounds, min/max over all runs, and the
    median of the per-round ratios to the first config."""
    results = []
    for i, first in enumerate(rounds[0]):
        res = dict(first, rounds=len(rounds))
        for p in (p for p in PHASES if p in first):
            runs = [r[i][p] for r in rounds]
            res[p] = dict(
                ms=statistics.median(x['ms'] for x in runs),
                min_ms=min(x['min_ms'] for x in runs),
                max_ms=max(x['max_ms'] for x in runs),
                peak_mb=None if runs[0]['peak_mb'] is None else max(
                    x['peak_mb'] for x in runs),
                ratio=statistics.median(
                    round_ratio(r[i][p], r[0][p]) for r in rounds))
        results.append(res)
    return results


def table(results):
    base = results[0]
    phases = [p for p in PHASES if p in base]
    part = 'mixing' if 'mixing_stage' in base else 'decoder'
    head = ['config', f'{part} params', 'optim MB'
            ] + [f'{p} ms (x)'
                 for p in phases] + [f'{p} peak MB' for p in phases]
    rows = []
    for r in results:
        name = r['config'] + (' :merged' if r['merged'] else '')
        if 'mixing_stage' in r:
            name += f" stage {r['mixing_stage']}" + (
                f" (K={r['num_factors']})" if r['num_factors'] else '')
        params = r[f'{part}_params']
        row = [
            name, f"{params / 1e6:.2f}M "
            f"({params / base[f'{part}_params']:.2f}x)",
            f"{r['optim_state_mb']:.0f}" if 'optim_state_mb' in r else '-'
        ]
        for p in phases:
            row.append(f"{r[p]['ms']:.0f} [{r[p]['min_ms']:.0f}-"
                       f"{r[p]['max_ms']:.0f}] ({r[p]['ratio']:.2f}x)")
        row += [
            '-' if r[p]['peak_mb'] is None else f"{r[p]['peak_mb']:.0f}"
            for p in phases
        ]
        rows.append(row)
    return markdown_table(head, rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='CONFIG or CONFIG:merged')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--amp',
        action='store_true',
        help='autocast: fp16 on CUDA, bf16 on CPU')
    parser.add_argument('--json', action='store_true')
    parser.add_argument(
        '--whole-model',
        action='store_true',
        help='also time the whole detector (backbone incl.)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=(800, 1344),
        metavar=('H', 'W'),
        help='padded input size (1333 pads to 1344)')
    parser.add_argument('--num-gts', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--mixing',
        type=int,
        metavar='STAGE',
        help='time one decoder.mixing call of this stage '
        'instead of the decoder (params: the mixing\'s)')
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='run all configs this many times, alternating '
        'their order; report medians over rounds')
    parser.add_argument(
        '--system-malloc',
        action='store_true',
        help='CPU: keep glibc malloc\'s default (returns '
        'large blocks to the OS; see the docstring)')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the decoder\'s forward (the '
        'mixing with --mixing); compiled in the warm-up')
    parser.add_argument(
        '--paired',
        action='store_true',
        help='time all configs in one process, taking turns '
        'call by call (see the docstring); no peak memory')
    parser.add_argument(
        '--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ('repeats', 'rounds'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1')
    if args.compile:
        args.warmup = max(args.warmup, 1)  # the first call compiles
    for spec in args.configs:
        path, _ = parse_spec(spec)
        if not osp.isfile(path):
            parser.error(f'config file does not exist: {path}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda but no CUDA device is available')
    return args


def run_worker(specs, worker_args, env):
    """Results of ``specs`` measured by a fresh worker process."""
    out = subprocess.run(
        [sys.executable, __file__, *specs, '--worker'] + worker_args,
        capture_output=True,
        text=True,
        env=env)
    if out.returncode:
        sys.exit(f'benchmark of {" ".join(specs)} failed:\n{out.stderr}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.worker:
        out = measure_paired(args) if args.paired else [
            measure(args.configs[0], args)
        ]
        print(json.dumps(out))
        return
    worker_args = [
        a for a in sys.argv[1:] if a not in args.configs and a != '--json'
    ]
    env = os.environ
    if args.device == 'cpu' and not args.system_malloc:
        env = dict(env, **RETAINED_MALLOC)
    rounds = []
    for k in range(args.rounds):
        if args.paired:  # one process, the configs take turns
            rounds.append(run_worker(args.configs, worker_args, env))
            continue
        order = range(len(args.configs))
        results = {}
        for i in (reversed(order) if k % 2 else order):
            results[i], = run_worker([args.configs[i]], worker_args, env)
        rounds.append([results[i] for i in range(len(args.configs))])
    results = combine(rounds)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        what = ('one mixing call' if args.mixing is not None else
                f'input {args.shape[0]}x{args.shape[1]}')
        malloc = (f', malloc {results[0]["malloc"]}'
                  if args.device == 'cpu' else '')
        print(f'device {args.device}{malloc}, amp {args.amp}, '
              f'compile {args.compile}, '
              f'batch {args.batch}, {what}, median of '
              f'{args.repeats} runs x {args.rounds} rounds [min-max] '
              '(median per-round ratio to the first config'
              f'{", runs paired in one process" if args.paired else ""})')
        print(table(results))


if __name__ == '__main__':
    main()
