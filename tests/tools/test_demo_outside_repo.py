"""tools/demo.py's default config is the installed package's copy, so the
demo starts from any directory (it used to need the repository as cwd)."""
import importlib.util
import os.path as osp

from helpers import REPO_ROOT


def test_default_config_resolves_outside_the_repo(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        'demo_tool', osp.join(REPO_ROOT, 'tools', 'demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.chdir(tmp_path)
    args = demo.parse_args(['--quick'])
    assert args.config.startswith('lors_det::')
    assert osp.isfile(args.config_file)
    assert osp.samefile(
        args.config_file,
        osp.join(REPO_ROOT, 'configs', 'synthetic',
                 'adamixer-lors_tiny_synthetic_demo.py'))
    cfg = demo.build_cfg(args)
    assert cfg.work_dir == 'work_dirs/demo_quick'
