r"""Convert an official AdaMixer checkpoint (MCG-NJU/AdaMixer) to lors_det.

The source is an mmdet 2.x checkpoint of the official code.

Usage::

    python tools/model_converters/adamixer_to_lors_det.py \
        SRC DST [--config CONFIG] [--force]

Reads SRC with lors_det's checkpoint reader (no code execution; its
``state_dict`` or ``model`` or the dict itself), renames every key (table
and layout checks: :mod:`lors_det.models.official_keys`) and saves
``dict(state_dict=..., meta=dict(converted_from=SRC, ...))`` to DST
atomically (DST may not be SRC or CONFIG; an existing DST is replaced only
with ``--force``). Keys no rule knows are an error naming
them; target keys the source lacks are listed. With ``--config`` the result
is also checked (keys and shapes) against the model that config builds.
"""
import argparse
import os.path as osp
import sys

from lors_det.engine.checkpoint import CheckpointError
from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.convert import convert_checkpoint_file
from lors_det.models.param_counts import build_model


def main(source: str, doc: str, tool: str) -> None:
    """``SRC DST [--config CONFIG] [--force]`` for ``source`` 'adamixer' or
    'lors' (``lors_to_lors_det.py`` calls it too)."""
    parser = argparse.ArgumentParser(description=doc.split('\n')[0])
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--config', help='lors_det config to check keys and shapes against')
    parser.add_argument(
        '--force', action='store_true', help='replace DST if it exists')
    args = parser.parse_args()
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(tool))))
    config = model = None
    if args.config is not None:
        with config_errors(args.config):
            cfg = load_tool_config(args.config)
            config, model = cfg.filename, build_model(cfg)
    try:
        convert_checkpoint_file(
            args.src,
            args.dst,
            source,
            config=config,
            model=model,
            converter=osp.relpath(tool, repo),
            force=args.force)
    except (ValueError, CheckpointError, OSError) as e:  # incl. bad paths
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main('adamixer', __doc__, __file__)
