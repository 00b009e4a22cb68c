r"""Convert an official AdaMixer+LORS checkpoint (li-jl16/LORS) to lors_det.

The source is an mmdet 2.x checkpoint of the official code.

Usage::

    python tools/model_converters/lors_to_lors_det.py \
        SRC DST [--config CONFIG]

Loads SRC (``torch.load(SRC, map_location='cpu')``; its ``state_dict`` or
the dict itself), renames every key (table and layout checks:
:mod:`lors_det.utils.convert`) and saves ``dict(state_dict=..., meta=dict(
converted_from=SRC, ...))`` to DST. Keys no rule knows are an error naming
them; target keys the source lacks are listed. With ``--config`` the result
is also checked (keys and shapes) against the model that config builds.
"""
import argparse
import os.path as osp
import sys

_REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from lors_det.utils.convert import (ConversionError,  # noqa: E402
                                    convert_checkpoint_file)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--config', help='lors_det config to check keys and shapes against')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        convert_checkpoint_file(args.src, args.dst, 'lors',
                                config=args.config,
                                converter=osp.relpath(__file__, _REPO_ROOT))
    except ConversionError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
