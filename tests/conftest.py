"""Session set-up (mmdet registries, cached metafile reads) and the shared
fixtures; the helpers themselves live in ``builders.py``."""
import functools

import pytest
import torch
from mmdet.utils import register_all_modules
from mmengine.config import utils as config_utils

import lors_det  # noqa: F401  (registers the plugin)
from builders import SYNTHETIC, build_model

register_all_modules(init_default_scope=True)


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'cuda: needs a CUDA GPU (tools/analysis/gpu_check.sh '
        'runs them with -m cuda)')


# mmengine re-reads all ~300 metafiles of mmdet for every ``mmdet::`` base a
# config inherits (~0.7 s each); they do not change during a test run
_load_metafile = config_utils.load
config_utils.load = functools.lru_cache(maxsize=None)(_load_metafile)


@pytest.fixture(params=sorted(SYNTHETIC))
def tiny_model(request):
    torch.manual_seed(0)
    return build_model(SYNTHETIC[request.param])
