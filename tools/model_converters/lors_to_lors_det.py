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
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)
from lors_det.utils.convert import converter_main  # noqa: E402

if __name__ == '__main__':
    converter_main('lors', __doc__, __file__)
