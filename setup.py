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
    python_requires='>=3.8',
    # The pinned stack (torch, mmcv built from source, mmdet) is installed
    # by `make install`; see requirements/.
    install_requires=[],
    license='Apache-2.0',
)
