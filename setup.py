import os.path as osp
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    scope = {}
    with open(osp.join(HERE, 'lors_det', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name):
    """Requirement lines of requirements/<name> (no comments, no options)."""
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


setup(
    name='lors_det',
    version=read_version(),
    description='AdaMixer + LORS (low-rank residual structure) as an '
    'MMDetection 3.x plugin',
    packages=find_packages(include=['lors_det', 'lors_det.*']),
    # lors_det/.mim links to configs/, tools/ and model-index.yml:
    # `lors_det::` config bases, `mim search lors_det`, and
    # `mim train/test/run lors_det ...` from a non-editable install
    # (lors_det/engine/config_scope.py)
    package_data={
        'lors_det':
        ['.mim/model-index.yml', '.mim/configs/**/*', '.mim/tools/**/*']
    },
    exclude_package_data={'lors_det': ['*.pyc', '**/__pycache__/*']},
    python_requires='>=3.8',
    # The versions tested: requirements/constraints.txt. mmcv is not listed
    # (as in mmdet): it must be compiled against the installed torch
    # (requirements/mminstall.txt, `mim install`, tools/misc/install.sh).
    install_requires=read_requirements('runtime.txt'),
    # ONNX export and its check (tools/deployment/pytorch2onnx.py); pinned
    # for torch 2.1 / numpy<2 / Python 3.11
    extras_require=dict(
        deploy=['onnx==1.16.2', 'onnxruntime==1.18.1'],
        mim=read_requirements('mminstall.txt')),
    license='Apache-2.0',
)
