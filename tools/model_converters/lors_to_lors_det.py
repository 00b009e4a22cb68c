r"""Convert an official AdaMixer+LORS checkpoint (li-jl16/LORS) to lors_det.

The source is an mmdet 2.x checkpoint of the official code.

Usage::

    python tools/model_converters/lors_to_lors_det.py \
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
from adamixer_to_lors_det import main  # same folder, same command line

if __name__ == '__main__':
    main('lors', __doc__, __file__)
