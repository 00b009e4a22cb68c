"""``lors_det::`` config bases from another project, and the mim metafiles
(lors_det/engine/config_scope.py, model-index.yml)."""
import os
import os.path as osp

import pytest
from helpers import REPO_ROOT
from mmengine.config import Config
from mmengine.fileio import load

import lors_det  # noqa: F401  (registers the lors_det:: scope)
from lors_det.engine.config_scope import NO_WEIGHTS


def test_user_config_inherits_lors_det_scope(tmp_path):
    user = tmp_path / 'my_lors.py'  # outside the repository
    user.write_text(
        "_base_ = 'lors_det::lors/adamixer-lors_r50_8xb2-1x_coco.py'\n"
        'train_cfg = dict(max_epochs=24)\n')
    cfg = Config.fromfile(str(user))
    assert cfg.train_cfg.max_epochs == 24
    assert cfg.model.decoder.mixing.lorsa.rank == 16
    assert cfg.model.type == 'AdaMixer'


def test_mim_folder_points_at_the_shipped_files():
    mim = osp.join(REPO_ROOT, 'lors_det', '.mim')
    assert osp.samefile(
        osp.join(mim, 'configs'), osp.join(REPO_ROOT, 'configs'))
    assert osp.samefile(
        osp.join(mim, 'model-index.yml'), osp.join(REPO_ROOT,
                                                   'model-index.yml'))


def _models():
    index = load(osp.join(REPO_ROOT, 'model-index.yml'))
    return [
        m for path in index['Import']
        for m in load(osp.join(REPO_ROOT, path))['Models']
    ]


def test_metafiles_list_every_config_honestly():
    models = _models()
    listed = {m['Config'] for m in models}
    for folder in ('adamixer', 'lors'):
        for name in os.listdir(osp.join(REPO_ROOT, 'configs', folder)):
            if name.endswith('.py'):
                assert f'configs/{folder}/{name}' in listed
    for m in models:
        # no checkpoint has been trained by this project: claim none (the
        # Weights marker makes loading them say so, tests/test_packaging.py)
        assert 'Results' not in m, m['Name']
        assert m['Weights'] == NO_WEIGHTS + m['Name'], m['Name']
        cfg = Config.fromfile(osp.join(REPO_ROOT, m['Config']))
        assert m['Name'] == osp.splitext(osp.basename(m['Config']))[0]
        assert m['Metadata']['Epochs'] == cfg.train_cfg.max_epochs, m['Name']
        assert (m['Metadata']['Queries'] ==
                cfg.model.query_generator.num_queries), m['Name']
        backbone = cfg.model.backbone
        if 'Swin' in backbone.type:
            expected = 'Swin-S'
        elif backbone.type == 'ResNeXt':
            expected = (f'ResNeXt-{backbone.depth}-{backbone.groups}x'
                        f'{backbone.base_width}d' +
                        ('-DCN' if backbone.get('dcn') else ''))
        else:
            expected = f'ResNet-{backbone.depth}'
        assert m['Metadata']['Backbone'] == expected, m['Name']


@pytest.mark.parametrize('name', ['lors/adamixer-lors_r50_8xb2-1x_coco.py'])
def test_mmengine_finds_the_metafile_entry(name):
    from mmengine.config.utils import _get_cfg_metainfo
    from mmengine.utils import get_installed_path
    meta = _get_cfg_metainfo(get_installed_path('lors_det'), name)
    assert meta['Config'] == 'configs/' + name


@pytest.mark.slow
def test_a_non_editable_wheel_ships_every_config(tmp_path):
    """``pip wheel .`` (what a non-editable install builds) carries every
    file of configs/ and model-index.yml under lors_det/.mim, and a
    ``lors_det::`` base resolves against the installed copy."""
    import subprocess
    import sys
    import zipfile
    src = tmp_path / 'src'  # a clean copy: no build/ or egg-info of ours
    subprocess.run(['git', 'clone', '-q', REPO_ROOT, str(src)], check=True)
    subprocess.run([
        sys.executable, '-m', 'pip', 'wheel',
        str(src), '--no-deps', '--no-build-isolation', '-q', '-w',
        str(tmp_path / 'wheel')
    ],
                   check=True)
    (wheel, ) = (tmp_path / 'wheel').glob('lors_det-*.whl')
    shipped = {
        n[len('lors_det/.mim/'):]
        for n in zipfile.ZipFile(wheel).namelist()
        if n.startswith('lors_det/.mim/')
    }
    # configs (`lors_det::`) and tools (`mim train/test/run lors_det`)
    expected = {'model-index.yml'} | {
        osp.relpath(osp.join(root, f), src)
        for top in ('configs', 'tools')
        for root, _, files in os.walk(src / top) for f in files
    }
    assert shipped == expected
    target = tmp_path / 'site'
    subprocess.run([
        sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
        str(target),
        str(wheel)
    ],
                   check=True)
    user = tmp_path / 'my.py'
    user.write_text("_base_ = 'lors_det::lors/adamixer-lors_x101-dcn_300q_"
                    "8xb2-crop-ms-480-800-3x_coco.py'\n")
    probe = ('import lors_det; from mmengine.config import Config; '
             f'cfg = Config.fromfile({str(user)!r}); '
             'print(lors_det.__file__, cfg.model.backbone.type)')
    out = subprocess.run([sys.executable, '-c', probe],
                         cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(target)),
                         capture_output=True,
                         text=True,
                         check=True).stdout
    assert out.split() == [str(target / 'lors_det' / '__init__.py'), 'ResNeXt']


@pytest.mark.slow
def test_a_lors_det_base_trains_and_evaluates_in_mmengines_runner(tmp_path):
    """mmengine tags the dicts of a ``lors_det::`` base with
    ``_scope_='lors_det'``; the ``lors_det`` registry scope
    (lors_det/registry.py) makes the Runner find the model, optimizer,
    schedulers, dataset, transforms, hooks and metric under it (without
    it: "AdaMixer is not in the mmengine::model registry")."""
    from mmengine.runner import Runner

    from lors_det.datasets import make_synthetic_coco
    data = tmp_path / 'data'
    make_synthetic_coco(
        str(data),
        num_train=4,
        num_val=2,
        img_size=64,
        seed=0,
        min_objects=1,
        empty_ratio=0.0)
    ann = f'{data}/annotations/instances_val.json'
    user = tmp_path / 'my_lors.py'
    user.write_text(
        "_base_ = 'lors_det::synthetic/adamixer-lors_tiny_synthetic.py'\n"
        f"work_dir = {str(tmp_path / 'work')!r}\n"
        f"train_dataloader = dict(dataset=dict(data_root={str(data)!r}))\n"
        f"val_dataloader = dict(dataset=dict(data_root={str(data)!r}))\n"
        'test_dataloader = val_dataloader\n'
        f'val_evaluator = dict(ann_file={ann!r})\n'
        'test_evaluator = val_evaluator\n'
        'train_cfg = dict(max_epochs=1, val_interval=1)\n'
        "param_scheduler = [dict(type='LinearLR', start_factor=0.1, "
        'by_epoch=False, begin=0, end=1)]\n')
    cfg = Config.fromfile(str(user))
    assert cfg.model._scope_ == 'lors_det'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert type(runner.model).__name__ == 'AdaMixer'
    assert runner.iter == 1  # 4 images, batch 4
    assert runner.message_hub.get_scalar('val/coco/bbox_mAP') is not None
