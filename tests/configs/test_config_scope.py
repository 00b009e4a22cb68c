"""``lors_det::`` config bases from another project, and the mim metafiles
(lors_det/engine/config_scope.py, model-index.yml)."""
import os
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.fileio import load

import lors_det  # noqa: F401  (registers the lors_det:: scope)
from builders import REPO


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
    mim = osp.join(REPO, 'lors_det', '.mim')
    assert osp.samefile(osp.join(mim, 'configs'), osp.join(REPO, 'configs'))
    assert osp.samefile(osp.join(mim, 'model-index.yml'),
                        osp.join(REPO, 'model-index.yml'))


def _models():
    index = load(osp.join(REPO, 'model-index.yml'))
    return [m for path in index['Import']
            for m in load(osp.join(REPO, path))['Models']]


def test_metafiles_list_every_config_honestly():
    models = _models()
    listed = {m['Config'] for m in models}
    for folder in ('adamixer', 'lors'):
        for name in os.listdir(osp.join(REPO, 'configs', folder)):
            if name.endswith('.py'):
                assert f'configs/{folder}/{name}' in listed
    for m in models:
        # no checkpoint has been trained by this project: claim none
        assert 'Weights' not in m and 'Results' not in m, m['Name']
        cfg = Config.fromfile(osp.join(REPO, m['Config']))
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
