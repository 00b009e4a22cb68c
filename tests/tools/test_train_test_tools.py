"""End-to-end tests of tools/train.py, tools/test.py and tools/dist_train.sh.

The tools are run as subprocesses (like researchers run them), on CPU
(``CUDA_VISIBLE_DEVICES=''``), from the repository root.

Everything config-specific comes from ONE fixture, :func:`train_config`.
To point the tests at a project config, replace its body; its contract is
documented in its docstring.
"""
import glob
import json
import os.path as osp
import pickle
import shutil
import socket
import sys

import pytest
import torch
from helpers import (CKPT_INTERVAL, MAX_ITERS, REPO_ROOT, run, tool_env,
                     write_tiny_config)

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')

# Contract shared by the tests and the `train_config` fixture (the tiny
# config's MAX_ITERS and CKPT_INTERVAL come from tests/helpers.py).
NUM_VAL_IMAGES = 4
TIMEOUT_S = 300


@pytest.fixture(scope='module')
def train_config(tmp_path_factory):
    """Path of the config file every test in this module trains/tests with.

    The tiny LORS config of ``tests/helpers.py`` (the one shrink of the
    shipped synthetic configs, shared with the engine tests), with a
    COCO validation after the last iteration. Contract:

    * trains with ``IterBasedTrainLoop`` for ``MAX_ITERS`` iterations and
      validates once at the end with a COCO bbox metric (``coco/bbox_mAP``);
    * ``CheckpointHook`` saves every ``CKPT_INTERVAL`` iterations
      (``iter_{CKPT_INTERVAL}.pth`` ... ``iter_{MAX_ITERS}.pth``);
    * the test split has ``NUM_VAL_IMAGES`` images;
    * fixed ``randomness.seed`` and a train pipeline without random
      augmentation (the resume test compares against an uninterrupted run);
    * small enough for a few CPU iterations (``num_workers=0``, tiny images).
    """
    from lors_det.datasets import make_synthetic_coco

    root = tmp_path_factory.mktemp('tools_e2e')
    data_root = root / 'data'
    make_synthetic_coco(
        str(data_root),
        num_train=8,
        num_val=NUM_VAL_IMAGES,
        img_size=64,
        seed=0,
        min_objects=1,
        empty_ratio=0.0)
    return write_tiny_config(
        root / 'adamixer-lors_tiny_synthetic_e2e.py',
        data_root,
        lors=True,
        validate=True)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _run(cmd, env=None, check=True):
    return run(cmd, env=env, check=check, timeout=TIMEOUT_S)


READ_LOGGER = """
import torch
_load = torch.load


def _logged_load(f, *args, **kwargs):
    print(f'torch.load({f})', flush=True)
    return _load(f, *args, **kwargs)


torch.load = _logged_load
"""


def _reads_logged(tmp_path):
    """An environment whose processes print every ``torch.load``."""
    site = tmp_path / 'log_reads'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(READ_LOGGER)
    return tool_env(extra_pythonpath=[site])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _load(path):
    return torch.load(path, map_location='cpu')


def _ckpt_iter(ckpt):
    """Iterations done (``meta.iter``) and the message hub's 0-based index
    of the last iteration (``runtime_info.iter``, updated before each iter)."""
    return ckpt['meta']['iter'], ckpt['message_hub']['runtime_info']['iter']


def _flat_tensors(obj, prefix=''):
    """Flatten nested dict/list containers into {path: tensor}."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_tensors(v, f'{prefix}/{k}'))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flat_tensors(v, f'{prefix}/{i}'))
    return out


def _assert_tensors_close(a, b, what, rtol=1e-4, atol=1e-6):
    fa, fb = _flat_tensors(a), _flat_tensors(b)
    assert fa.keys() == fb.keys(), f'{what}: different keys'
    assert fa, f'{what}: no tensors to compare'
    for k in fa:
        if fa[k].is_floating_point():
            torch.testing.assert_close(
                fa[k], fb[k], rtol=rtol, atol=atol, msg=f'{what}{k}')
        else:
            assert torch.equal(fa[k], fb[k]), f'{what}{k}'


def _find_metric_json(work_dir, key='coco/bbox_mAP'):
    """Return the last metrics dict holding `key` in work_dir/*/*.json."""
    found = None
    for path in sorted(
            glob.glob(osp.join(work_dir, '**', '*.json'), recursive=True)):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if key in rec:
                    found = rec
    return found


def _train_losses(work_dir):
    """{iteration: loss} logged by LoggerHook in work_dir/*/vis_data/."""
    losses = {}
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec:
                    losses[rec['iter']] = rec['loss']
    return losses


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def trained(train_config, tmp_path_factory):
    """An uninterrupted single-process training run: its work_dir."""
    work_dir = str(tmp_path_factory.mktemp('train_full'))
    _run([sys.executable, TRAIN, train_config, '--work-dir', work_dir])
    return work_dir


@pytest.mark.slow
def test_train_then_test(train_config, trained, tmp_path):
    for it in range(CKPT_INTERVAL, MAX_ITERS + 1, CKPT_INTERVAL):
        assert osp.isfile(osp.join(trained, f'iter_{it}.pth'))
    ckpt_path = osp.join(trained, f'iter_{MAX_ITERS}.pth')
    assert _ckpt_iter(_load(ckpt_path)) == (MAX_ITERS, MAX_ITERS - 1)
    # validation at the end of training logged a COCO metric
    assert _find_metric_json(trained) is not None

    work_dir = str(tmp_path / 'test')
    out_pkl = str(tmp_path / 'results.pkl')
    proc = _run([
        sys.executable, TEST, train_config, ckpt_path, '--work-dir', work_dir,
        '--out', out_pkl
    ])
    assert 'coco/bbox_mAP' in proc.stdout
    metrics = _find_metric_json(work_dir)
    assert metrics is not None, 'no metrics json in the test work_dir'
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert isinstance(metrics[key], float) and -1.0 <= metrics[key] <= 1.0
    with open(out_pkl, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == NUM_VAL_IMAGES
    assert {'img_id', 'pred_instances'} <= set(results[0])

    # --merge-lors: model.merge_lors() after loading, the same detections;
    # the checkpoint is read once (checked and loaded from the one read)
    merged_pkl = str(tmp_path / 'merged.pkl')
    proc = _run([
        sys.executable, TEST, train_config, ckpt_path, '--work-dir',
        str(tmp_path / 'test_merged'), '--out', merged_pkl, '--merge-lors'
    ],
                env=_reads_logged(tmp_path))
    assert proc.stdout.count(f'torch.load({ckpt_path})') == 1, proc.stdout
    assert '--merge-lors: merged 2 LORS stacks' in proc.stdout
    with open(merged_pkl, 'rb') as f:
        merged = pickle.load(f)
    assert [r['img_id'] for r in merged] == [r['img_id'] for r in results]
    for a, b in zip(results, merged):
        for key in ('bboxes', 'scores', 'labels'):
            torch.testing.assert_close(
                b['pred_instances'][key],
                a['pred_instances'][key],
                rtol=1e-4,
                atol=1e-3)


@pytest.mark.slow
def test_resume_auto(train_config, trained, tmp_path):
    """Resume from the mid-run checkpoint == the uninterrupted run."""
    # Simulate a run interrupted right after saving iter_{CKPT_INTERVAL}:
    # a work_dir holding that checkpoint and the `last_checkpoint` pointer
    # that CheckpointHook writes.
    work_dir = tmp_path / 'resumed'
    work_dir.mkdir()
    mid = work_dir / f'iter_{CKPT_INTERVAL}.pth'
    shutil.copy(osp.join(trained, f'iter_{CKPT_INTERVAL}.pth'), mid)
    (work_dir / 'last_checkpoint').write_text(str(mid))

    proc = _run([
        sys.executable, TRAIN, train_config, '--work-dir',
        str(work_dir), '--resume'
    ])
    assert f'resumed epoch: 0, iter: {CKPT_INTERVAL}' in proc.stdout
    # training went on from CKPT_INTERVAL (not from scratch), with the same
    # losses as the uninterrupted run
    resumed_losses = _train_losses(str(work_dir))
    full_losses = _train_losses(trained)
    assert sorted(resumed_losses) == list(
        range(CKPT_INTERVAL + 1, MAX_ITERS + 1))
    for it, loss in resumed_losses.items():
        assert loss == pytest.approx(full_losses[it], rel=1e-4), it
    resumed = _load(work_dir / f'iter_{MAX_ITERS}.pth')
    full = _load(osp.join(trained, f'iter_{MAX_ITERS}.pth'))

    last = (MAX_ITERS, MAX_ITERS - 1)
    assert _ckpt_iter(resumed) == _ckpt_iter(full) == last
    assert resumed['meta']['seed'] == full['meta']['seed']
    # same optimizer state (momentum buffers, lr) and scheduler state
    assert resumed['optimizer']['param_groups'][0]['lr'] == pytest.approx(
        full['optimizer']['param_groups'][0]['lr'])
    _assert_tensors_close(resumed['optimizer']['state'],
                          full['optimizer']['state'], 'optimizer state')
    assert resumed['param_schedulers'] == full['param_schedulers']
    _assert_tensors_close(resumed['state_dict'], full['state_dict'], 'weights')


RANK_DUMP_HOOK = '''
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankDumpHook(Hook):
    """Test-only: every rank dumps its final weights and the img ids it saw."""
    priority = 'LOWEST'

    def before_train(self, runner):
        self.img_ids = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.img_ids += [s.img_id for s in data_batch['data_samples']]

    def after_train(self, runner):
        model = runner.model
        module = model.module if is_model_wrapper(model) else model
        torch.save(
            dict(
                rank=runner.rank,
                world_size=runner.world_size,
                wrapper=type(model).__name__,
                backend=dist.get_backend() if dist.is_initialized() else None,
                img_ids=self.img_ids,
                params={k: v.detach().clone()
                        for k, v in module.named_parameters()}),
            osp.join(runner.work_dir, f'rank{runner.rank}_dump.pth'))
'''


@pytest.mark.slow
def test_dist_train_cpu_two_ranks(train_config, tmp_path):
    hook_dir = tmp_path / 'hook'
    hook_dir.mkdir()
    (hook_dir / 'rank_dump_hook.py').write_text(RANK_DUMP_HOOK)
    cfg = tmp_path / 'with_rank_dump.py'
    cfg.write_text(
        f'_base_ = [{train_config!r}]\n'
        "custom_imports = dict(imports=['lors_det', 'rank_dump_hook'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='RankDumpHook')]\n")
    work_dir = tmp_path / 'dist'

    env = tool_env(extra_pythonpath=[str(hook_dir)])
    env['PORT'] = str(_free_port())
    env['OMP_NUM_THREADS'] = '1'
    _run(['bash', DIST_TRAIN,
          str(cfg), '2', '--work-dir',
          str(work_dir)],
         env=env)

    dumps = [_load(work_dir / f'rank{r}_dump.pth') for r in (0, 1)]
    for r, d in enumerate(dumps):
        assert d['rank'] == r and d['world_size'] == 2
        assert d['backend'] == 'gloo'
        assert d['wrapper'] == 'MMDistributedDataParallel'
    # the ranks trained on different images ...
    assert dumps[0]['img_ids'] != dumps[1]['img_ids']
    # ... yet gradients were all-reduced: identical parameters
    p0, p1 = dumps[0]['params'], dumps[1]['params']
    assert p0.keys() == p1.keys() and p0
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f'rank params differ: {k}'
    # rank 0 saved the checkpoint, holding those weights
    ckpt = _load(work_dir / f'iter_{MAX_ITERS}.pth')
    assert _ckpt_iter(ckpt) == (MAX_ITERS, MAX_ITERS - 1)
    for k in p0:
        assert torch.equal(ckpt['state_dict'][k], p0[k]), k
    assert _find_metric_json(str(work_dir)) is not None

    # distributed test on the 2-rank checkpoint
    env['PORT'] = str(_free_port())
    test_dir = tmp_path / 'dist_test'
    proc = _run([
        'bash', DIST_TEST,
        str(cfg),
        str(work_dir / f'iter_{MAX_ITERS}.pth'), '2', '--work-dir',
        str(test_dir)
    ],
                env=env)
    assert 'coco/bbox_mAP' in proc.stdout
    # Not the metrics json here: mmengine 0.10.7's LoggerHook.after_test_epoch
    # dumps it from every rank to the same path (a write race, GPU or not).
    logs = glob.glob(str(test_dir / '*' / '*.log'))
    assert logs and 'coco/bbox_mAP' in open(logs[0]).read()


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['train', 'test'])
def test_missing_config(tool, tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    cmd = [sys.executable, TRAIN, missing] if tool == 'train' else \
        [sys.executable, TEST, missing, str(tmp_path / 'x.pth')]
    proc = _run(cmd, check=False)
    assert proc.returncode != 0
    assert missing in proc.stdout
    assert 'does not exist' in proc.stdout


@pytest.mark.slow
def test_missing_checkpoint(train_config, tmp_path):
    missing = str(tmp_path / 'no_such_checkpoint.pth')
    proc = _run([sys.executable, TEST, train_config, missing], check=False)
    assert proc.returncode != 0
    assert missing in proc.stdout
    assert 'checkpoint' in proc.stdout and 'does not exist' in proc.stdout


@pytest.mark.slow
def test_resume_from_another_architecture_is_refused(train_config, tmp_path):
    """``--resume`` with an AdaMixer checkpoint into the AdaMixer+LORS config
    stops before training, naming the file, instead of loading part of it."""
    from helpers import SYNTHETIC, build_model
    ckpt = tmp_path / 'adamixer.pth'
    torch.save(
        dict(
            state_dict=build_model(SYNTHETIC['adamixer']).state_dict(),
            meta=dict(epoch=1, iter=2)), ckpt)
    work_dir = tmp_path / 'work'
    proc = _run([
        sys.executable, TRAIN, train_config, '--work-dir',
        str(work_dir), '--resume',
        str(ckpt)
    ],
                check=False)
    assert proc.returncode != 0
    assert str(ckpt) in proc.stdout and 'does not fit' in proc.stdout
    assert not glob.glob(str(work_dir / '*.pth'))  # nothing trained


@pytest.mark.slow
def test_merge_lors_on_a_config_without_lors_warns(train_config, tmp_path):
    """``--merge-lors`` on a plain AdaMixer config has nothing to fold: a
    warning naming the config, then the usual evaluation."""
    from helpers import load_config
    from mmdet.registry import MODELS
    config = write_tiny_config(
        tmp_path / 'adamixer_tiny.py',
        osp.join(osp.dirname(train_config), 'data'),
        lors=False,
        validate=True)
    ckpt = tmp_path / 'adamixer.pth'
    model = MODELS.build(load_config(config).model)
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    proc = _run([
        sys.executable, TEST, config,
        str(ckpt), '--work-dir',
        str(tmp_path / 'test'), '--merge-lors'
    ])
    assert f'--merge-lors: {config} has no LORS layer' in proc.stdout
    assert 'coco/bbox_mAP' in proc.stdout
