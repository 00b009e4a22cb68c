"""Fold a LORS checkpoint into dense per-stage weights for deployment.

    python tools/model_converters/lors_merge.py CONFIG CHECKPOINT OUT [--force]

writes OUT (checkpoint) and OUT's name with ``.py`` (the deploy config, a
model without LORS). For an AdaMixer+LORS config that is the same model
with ``lorsa=None`` and ``lorst=None``, i.e. AdaMixer's unshared stages:
one dense ACM/ASM generator and one dense output linear per stage. For a
``LORSWrapper`` config (``projects/lors_mmdet``) it is the wrapped mmdet
detector (``model.detector``), with a dense linear per layer where the
stacks were shared. ``tools/test.py DEPLOY_CONFIG OUT`` then gives the same
detections as the LORS model at the plain model's cost. The deploy model is
larger (dense weights per stage): keep the LORS checkpoint as the training
asset. Neither output may be an input; existing outputs are replaced only
with ``--force``; both are written atomically. The merging itself is
:func:`lors_det.models.deploy.to_deploy`.
"""
import argparse
import os.path as osp
import sys

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import lors_det  # noqa: F401  (registers the plugin)
from lors_det.engine.checkpoint import CheckpointError
from lors_det.engine.config_scope import config_errors, load_tool_config
from lors_det.engine.fileio import (atomic_write_text, check_outputs,
                                    save_checkpoint)
from lors_det.engine.weights import load_weights
from lors_det.models.deploy import to_deploy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output checkpoint (.pth)')
    parser.add_argument(
        '--force', action='store_true', help='replace existing outputs')
    args = parser.parse_args()
    if not osp.isfile(args.checkpoint):
        parser.error(f'file does not exist: {args.checkpoint}')
    out_cfg = osp.splitext(args.out)[0] + '.py'
    register_all_modules()
    with config_errors(args.config):
        cfg = load_tool_config(args.config)
        model = MODELS.build(cfg.model)
    try:
        check_outputs(
            dict(OUT=args.out, **{'deploy config': out_cfg}),
            dict(CONFIG=cfg.filename, CHECKPOINT=args.checkpoint),
            force=args.force)
        load_weights(model, args.checkpoint, config=args.config)
        deploy, state = to_deploy(cfg, model)
        atomic_write_text(out_cfg, deploy.pretty_text)
        save_checkpoint(
            dict(
                meta=dict(merged_from=osp.abspath(args.checkpoint)),
                state_dict=state), args.out)
    except (ValueError, CheckpointError, OSError) as e:
        sys.exit(f'error: {e}')
    print(f'deploy checkpoint: {args.out}\ndeploy config:     {out_cfg}')


if __name__ == '__main__':
    main()
