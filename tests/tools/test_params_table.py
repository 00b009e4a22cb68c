"""docs/params.md is exactly what tools/analysis/params_table.py writes:
the same text around the table, the same configs in the same order, and
(for a sample, building all ~40 models takes minutes) the same rows."""
import importlib.util
import os.path as osp

import pytest
from helpers import REPO_ROOT

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis', 'params_table.py')
DOC = osp.join(REPO_ROOT, 'docs', 'params.md')
# the two reference rows, a LORS row and a tiny synthetic one
SAMPLE = ('configs/adamixer/adamixer-2x64_r50_8xb2-1x_coco.py',
          'configs/lors/adamixer-lors_r50_8xb2-1x_coco.py',
          'configs/synthetic/adamixer-lors_tiny_synthetic.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('params_table_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text):
    """{config: table line} of a params.md text."""
    return {
        line.split('`')[1]: line
        for line in text.splitlines() if line.startswith('| `')
    }


@pytest.mark.slow
def test_doc_is_what_the_tool_writes(tool):
    with open(DOC, encoding='utf-8') as f:
        doc = f.read()
    configs = tool.find_configs()
    assert list(_rows(doc)) == configs, \
        'docs/params.md lists other configs: rerun ' + tool.COMMAND
    sample = tool.document(list(SAMPLE))
    rows = _rows(doc)

    for config, line in _rows(sample).items():
        assert rows[config] == line, (
            f'{config}: docs/params.md is stale, rerun {tool.COMMAND}')
    # the text around the table: the doc without its other rows
    kept = '\n'.join(
        line for line in doc.splitlines()
        if not line.startswith('| `') or line.split('`')[1] in SAMPLE) + '\n'
    assert kept == sample
