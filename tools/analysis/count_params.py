"""Count a detector's parameters per component, from its config.

Usage::

    python tools/analysis/count_params.py CONFIG [--json] \
        [--cfg-options k=v ...]
    mim run lors_det count_params \
        lors_det::lors/adamixer-lors_r50_8xb2-1x_coco.py

CONFIG is a path or an installed package's config (``lors_det::...``,
``mmdet::...``); ``--cfg-options`` overrides it as in ``tools/train.py``. A
config that cannot be loaded or built is one ``error:`` line.

Text output: one line describing the decoder the config builds (queries, G,
P_in, P_out, LORSA / LORST / FFN options), then a table with backbone, neck,
query_generator, decoder (with its shared / private / other split and one
line per decoder part: ``stages`` summed over stages, ``mixing.generator``,
``mixing.out_proj``, ``mixing.norms``) and total. ``trainable`` is shown
where it differs from the parameter count (frozen backbone stages, the
frozen initial boxes).

``--json`` prints ONE JSON object: ``backbone``, ``neck``,
``query_generator``, ``decoder``, ``total``, ``decoder_shared``,
``decoder_private`` (ints, all parameters incl. frozen ones).

No weights are loaded (building a model does not load pretrained weights).
The counting lives in :mod:`lors_det.models.param_counts`.
"""
import argparse
import json
from typing import Dict

from mmengine.config import DictAction

from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.tables import text_table
from lors_det.models.param_counts import (COMPONENTS, describe_decoder,
                                          json_summary, param_counts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Count parameters of a detector config, per component')
    parser.add_argument(
        'config', help='config file path, or lors_det::'
        'path/in/configs.py')
    parser.add_argument(
        '--json',
        action='store_true',
        help='print one JSON object instead of the table')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value (as in '
        'tools/train.py)')
    return parser.parse_args(argv)


def format_counts(counts: Dict[str, Dict[str, int]],
                  description: str = '') -> str:
    """The text table printed by ``tools/analysis/count_params.py``."""

    def num(v):
        return f'{v:,}'

    header = ('part', 'parameters', 'trainable', 'shared', 'private')
    rows = []

    def row(name, c, split=False):
        trainable = '' if c['trainable'] == c['total'] else num(c['trainable'])
        rows.append((name, num(c['total']),
                     trainable, num(c['shared']) if split else '',
                     num(c['private']) if split else ''))

    for name in COMPONENTS:
        row(name, counts[name], split=name == 'decoder')
        if name == 'decoder':
            d = counts['decoder']
            rows.append(('  decoder other (neither shared nor private)',
                         num(d['other']), '', '', ''))
            for part, c in counts['decoder_parts'].items():
                label = f'  decoder.{part}'
                if part == 'stages':
                    label += ' (all stages summed)'
                row(label, c, split=True)
    row('total', counts['total'])
    lines = [description] if description else []
    lines.append(text_table(header, rows))
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    with config_errors(args.config):
        cfg = load_tool_config(args.config, args.cfg_options)
        counts = param_counts(cfg)
    if args.json:
        print(json.dumps(json_summary(counts), sort_keys=False))
    else:
        print(args.config)
        print(format_counts(counts, describe_decoder(cfg)))


if __name__ == '__main__':
    main()
