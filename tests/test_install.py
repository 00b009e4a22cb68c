"""The pinned stack is what `make install` promises, and the install script
picks mmcv's source without depending on ../shared (users have none)."""
import os
import subprocess

import mmcv
import mmdet
import mmengine
import pytest
import torch
from helpers import REPO_ROOT

INSTALL = os.path.join(REPO_ROOT, 'tools', 'misc', 'install.sh')
WHEEL = 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'


def plan(tmp_path, prebuilt=''):
    env = dict(
        os.environ,
        LORS_DET_CACHE=str(tmp_path / 'cache'),
        LORS_DET_PREBUILT_WHEELS=prebuilt)
    out = subprocess.run(['bash', INSTALL, '--plan'],
                         env=env,
                         cwd=REPO_ROOT,
                         capture_output=True,
                         text=True,
                         check=True)
    return out.stdout.strip()


def test_pinned_versions_and_compiled_ops():
    assert torch.__version__.split('+')[0] == '2.1.2'
    assert mmcv.__version__ == '2.1.0'
    assert mmengine.__version__ == '0.10.7'
    assert mmdet.__version__ == '3.3.0'
    from mmcv.ops import nms  # compiled against this torch
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [50., 50., 60., 60.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_mmcv_source_without_shared_is_a_source_build(tmp_path):
    assert plan(tmp_path).endswith(
        f'source build into {tmp_path}/cache/wheels/torch2.1.2-cp311')


def test_mmcv_source_prefers_the_cache_then_a_prebuilt_folder(tmp_path):
    prebuilt = tmp_path / 'prebuilt'
    prebuilt.mkdir()
    (prebuilt / WHEEL).write_bytes(b'')
    assert plan(tmp_path, str(prebuilt)) == f'mmcv 2.1.0: prebuilt {prebuilt}'
    cache = tmp_path / 'cache' / 'wheels' / 'torch2.1.2-cp311'
    cache.mkdir(parents=True)
    (cache / WHEEL).write_bytes(b'')
    assert plan(tmp_path, str(prebuilt)) == f'mmcv 2.1.0: cache {cache}'


@pytest.mark.slow
def test_second_make_install_is_a_no_op():
    # `make -q` exits 0 when the install stamp is up to date
    assert subprocess.run(['make', '-q', 'install'],
                          cwd=REPO_ROOT).returncode == 0
