from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('lors_det/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='lors_det',
    version=read_version(),
    description='AdaMixer + LORS (low-rank residual structure) as an '
    'MMDetection 3.x plugin',
    packages=find_packages(include=['lors_det', 'lors_det.*']),
    # lors_det/.mim links to configs/ and model-index.yml: `lors_det::`
    # config bases and `mim search lors_det` (lors_det/engine/config_scope.py)
    package_data={'lors_det': ['.mim/model-index.yml', '.mim/configs/**/*']},
    python_requires='>=3.8',
    # The pinned stack (torch, mmcv built from source, mmdet) is installed
    # by `make install`; see requirements/.
    install_requires=[],
    # ONNX export and its check (tools/deployment/pytorch2onnx.py); pinned
    # for torch 2.1 / numpy<2 / Python 3.11
    extras_require=dict(deploy=['onnx==1.16.2', 'onnxruntime==1.18.1']),
    license='Apache-2.0',
)
