"""lors_det installed like a package: real requirements, one constraints
file for every install, and the tools shipped for ``mim`` (setup.py,
requirements/, tools/misc/install.sh, lors_det/.mim).

The slow test installs the package non-editable into a fresh venv (the big
packages of this venv borrowed through links, none downloaded) and runs
``mim train``, ``mim test`` and ``mim run`` from a directory outside the
repository."""
import configparser
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
from helpers import LORS_MIXING, NO_VALIDATION, REPO_ROOT, TIMEOUT_S, TINY_CFG

REQ = osp.join(REPO_ROOT, 'requirements')


def _names(path):
    with open(path) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def _project(req):
    for sep in '<>=!~[; ':
        req = req.split(sep, 1)[0]
    return req.lower()


def test_install_requires_are_the_runtime_requirements():
    sys.path.insert(0, REPO_ROOT)
    import setuptools
    captured = {}
    real_setup = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        with open(osp.join(REPO_ROOT, 'setup.py')) as f:
            exec(
                compile(f.read(), 'setup.py', 'exec'), {
                    '__file__': osp.join(REPO_ROOT, 'setup.py'),
                    '__name__': '__main__'
                })
    finally:
        setuptools.setup = real_setup
        sys.path.remove(REPO_ROOT)
    requires = captured['install_requires']
    assert requires == _names(osp.join(REQ, 'runtime.txt'))
    projects = {_project(r) for r in requires}
    assert {'torch', 'numpy', 'mmengine', 'mmdet'} <= projects
    assert 'numpy<2' in requires  # torch 2.1 and the mmcv build need 1.x
    # mmcv is compiled against the installed torch: not an install_requires
    assert 'mmcv' not in projects
    assert '.mim/tools/**/*' in captured['package_data']['lors_det']


def test_every_requirements_file_is_constrained():
    pins = {_project(r): r for r in _names(osp.join(REQ, 'constraints.txt'))}
    for name in ('torch', 'torchvision', 'numpy', 'mmcv', 'mmengine', 'mmdet',
                 'opencv-python'):
        assert name in pins, name
    assert pins['numpy'] == 'numpy<2' and pins['torch'] == 'torch==2.1.2'
    names = sorted(
        n for n in os.listdir(REQ)
        if n.endswith('.txt') and n != 'constraints.txt')
    assert {
        'build.txt', 'runtime.txt', 'tests.txt', 'mminstall.txt', 'lint.txt'
    } <= set(names)
    for name in names:
        with open(osp.join(REQ, name)) as f:
            assert '-c constraints.txt' in f.read().splitlines(), name


def test_install_script_pins_the_venv():
    with open(osp.join(REPO_ROOT, 'tools', 'misc', 'install.sh')) as f:
        script = f.read()
    assert script.count('-c "$constraints"') >= 3
    assert 'constraint = $venv/lors_det-constraints.txt' in script


def test_this_venv_keeps_the_constraints():
    """A venv made by install.sh (the stamp) has them in its pip.conf."""
    if not osp.isfile(osp.join(sys.prefix, '.lors_det-installed')):
        pytest.skip('this venv was not made by tools/misc/install.sh')
    conf = configparser.ConfigParser()
    assert conf.read(osp.join(sys.prefix, 'pip.conf')), \
        f'{sys.prefix}/pip.conf missing: rerun `make install`'
    pinned = conf['global']['constraint']
    assert _names(pinned) == _names(osp.join(REQ, 'constraints.txt'))


def test_mim_folder_ships_the_tools():
    tools = osp.join(REPO_ROOT, 'lors_det', '.mim', 'tools')
    assert osp.samefile(tools, osp.join(REPO_ROOT, 'tools'))
    for script in ('train.py', 'test.py', 'demo.py',
                   'analysis/count_params.py'):
        assert osp.isfile(osp.join(tools, script)), script


# -- a non-editable install in a fresh venv ----------------------------------
# this venv's packages, except the ones the fresh venv brings itself and
# this checkout's editable lors_det
_NOT_BORROWED = ('lors', 'easy-install.pth', '__editable__', '__pycache__',
                 'pip', 'setuptools', '_distutils_hack',
                 'distutils-precedence.pth', 'pkg_resources')


def _package_dirs():
    """This venv's site-packages and the folders its .pth files add (but
    not this checkout)."""
    import glob
    import site
    dirs = list(site.getsitepackages())
    pths = [p for d in list(dirs) for p in glob.glob(osp.join(d, '*.pth'))]
    for pth in pths:
        with open(pth) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith(('#', 'import')) and \
                        osp.isdir(line) and \
                        osp.realpath(line) != osp.realpath(REPO_ROOT):
                    dirs.append(line)
    return dirs


def _fresh_venv(root):
    """A venv whose site-packages links to this venv's packages (no
    download) but not to this checkout."""
    venv, borrowed = root / 'venv', root / 'borrowed'
    borrowed.mkdir()
    for site_dir in _package_dirs():
        for name in os.listdir(site_dir):
            if not name.startswith(_NOT_BORROWED) and \
                    not (borrowed / name).exists():
                os.symlink(osp.join(site_dir, name), borrowed / name)
    subprocess.run(
        [sys.executable, '-m', 'venv', str(venv)],
        check=True,
        timeout=TIMEOUT_S)
    python = venv / 'bin' / 'python'
    site_packages = subprocess.run([
        python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'
    ],
                                   check=True,
                                   capture_output=True,
                                   text=True).stdout.strip()
    with open(osp.join(site_packages, 'borrowed.pth'), 'w') as f:
        f.write(f'{borrowed}\n')
    return str(python)


def _copy_checkout(dst):
    """The files git would commit (tracked and new), links kept as links."""
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard', '-z'],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True).stdout.decode().split('\0')
    for rel in filter(None, files):
        src = osp.join(REPO_ROOT, rel)
        if not osp.lexists(src):
            continue  # deleted in the work tree
        os.makedirs(osp.join(dst, osp.dirname(rel)), exist_ok=True)
        if osp.islink(src):
            os.symlink(os.readlink(src), osp.join(dst, rel))
        else:
            shutil.copy2(src, osp.join(dst, rel))
    return dst


def _run(cmd, cwd, env):
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S)
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:])
    return proc.stdout


@pytest.mark.slow
def test_mim_train_test_run_from_a_non_editable_install(
        tmp_path, synthetic_root):
    pytest.importorskip('mim', reason='openmim (requirements/tests.txt)')
    python = _fresh_venv(tmp_path)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('PYTHONPATH', 'LORS_DET_TRUST_CHECKPOINTS')
    }
    env.update(
        CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    src = _copy_checkout(str(tmp_path / 'src'))
    _run([python, '-m', 'pip', 'install', '-q', '--no-build-isolation', src],
         tmp_path, env)
    shutil.rmtree(src)  # nothing may come from a checkout
    user = tmp_path / 'user'  # a directory outside any checkout
    user.mkdir()
    where = _run([python, '-c', 'import lors_det; print(lors_det.__file__)'],
                 user, env)
    assert where.startswith(str(tmp_path / 'venv')), where
    # a user's config inheriting the installed one
    (user / 'tiny_mim.py').write_text(
        TINY_CFG.format(
            base='lors_det::synthetic/adamixer-lors_tiny_synthetic.py',
            data_root=str(synthetic_root) + '/',
            mixing=LORS_MIXING,
            validation=NO_VALIDATION.format(max_iters=2),
            ckpt_interval=2))
    out = _run([
        python, '-m', 'mim', 'train', 'lors_det', 'tiny_mim.py', '--work-dir',
        'wd'
    ], user, env)
    assert '/lors_det/.mim/tools/train.py' in out
    assert (user / 'wd' / 'iter_2.pth').is_file(), out[-2000:]
    out = _run([
        python, '-m', 'mim', 'test', 'lors_det', 'tiny_mim.py', '--checkpoint',
        'wd/iter_2.pth', '--work-dir', 'wd_test'
    ], user, env)
    assert 'Testing finished successfully' in out, out[-2000:]
    out = _run([
        python, '-m', 'mim', 'run', 'lors_det', 'count_params',
        'lors_det::synthetic/adamixer-lors_tiny_synthetic.py', '--cfg-options',
        'model.decoder.num_stages=2',
        'model.decoder.mixing.lorsa.num_factors=1', '--json'
    ], user, env)
    assert '"decoder_shared"' in out, out[-2000:]
    # no weights are published: mim download says so (its own error
    # handling then fails on the message, hence no returncode check)
    proc = subprocess.run([
        python, '-m', 'mim', 'download', 'lors_det', '--config',
        'adamixer-lors_r50_8xb2-1x_coco', '--dest', 'dl'
    ],
                          cwd=user,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=TIMEOUT_S)
    assert 'lors-det-no-weights-yet://adamixer-lors_r50_8xb2-1x_coco' in \
        proc.stdout, proc.stdout[-2000:]


def test_loading_a_metafile_model_says_no_weights_are_published():
    """DetInferencer(model=NAME, scope='lors_det') reads the metafile's
    Weights; there are none yet, and loading says so (not "KeyError:
    'Weights'")."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from lors_det.engine.config_scope import (NO_WEIGHTS,
                                              NoPublishedWeightsError)
    name = 'adamixer-lors_r50_8xb2-1x_coco'
    with pytest.raises(
            NoPublishedWeightsError,
            match=f'published no trained weights for {name}'):
        CheckpointLoader.load_checkpoint(NO_WEIGHTS + name)
    from mmdet.apis import DetInferencer
    with pytest.raises(NoPublishedWeightsError, match=name):
        DetInferencer(model=name, scope='lors_det', device='cpu')
