"""Make ``lors_det::`` usable in config bases from another project::

    _base_ = 'lors_det::lors/adamixer-lors_r50_8xb2-1x_coco.py'

mmengine resolves ``pkg::path`` (``mmengine.config.utils
._get_package_and_cfg_path``) only for module names in its
``MODULE2PACKAGE`` table (the OpenMMLab packages), then reads
``<installed package>/.mim/configs/path``. The package ships
``lors_det/.mim/configs`` (a link to the repository's ``configs/``) and
``.mim/model-index.yml`` (read by ``mim search lors_det``), so the one thing
to add is the table entry, done on ``import lors_det``. The table is read
while a config file is parsed, so import ``lors_det`` before
``Config.fromfile`` (this project's tools do; ``custom_imports`` comes too
late for ``_base_``).
"""


def register_config_scope() -> None:
    """Add ``lors_det`` to mmengine's module -> package table. Idempotent."""
    from mmengine.config import utils

    utils.MODULE2PACKAGE.setdefault('lors_det', 'lors_det')
