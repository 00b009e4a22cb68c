"""Fold a LORS checkpoint into dense per-stage weights for deployment.

    python tools/model_converters/lors_merge.py CONFIG CHECKPOINT OUT

writes OUT (checkpoint) and OUT's name with ``.py`` (the deploy config: the
same model with ``lorsa=None`` and ``lorst=None``, i.e. AdaMixer's unshared
stages: one dense ACM/ASM generator and one dense output linear per stage).
``tools/test.py DEPLOY_CONFIG OUT`` then gives the same detections as the
LORS model at exactly AdaMixer's cost per stage. The deploy model is larger
(dense weights per stage): it trades parameters for speed; keep the LORS
checkpoint as the training asset.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import lors_det  # noqa: E402,F401
from lors_det.lors import MergeableStack  # noqa: E402


def merge_checkpoint(cfg: Config, checkpoint: str):
    """Returns (deploy config, deploy state dict) for a LORS checkpoint."""
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    lors = {n: m for n, m in model.named_modules()
            if isinstance(m, MergeableStack)}
    if not lors:
        raise ValueError(f'{cfg.filename}: the model has no LORS layer '
                         '(mixing.lorsa and mixing.lorst are not set); '
                         'nothing to merge')
    state = model.state_dict()
    for name, module in lors.items():
        for key in list(state):
            if key.startswith(name + '.'):
                del state[key]
        state.update({f'{name}.{k}': v
                      for k, v in module.dense_state_dict().items()})
    deploy = Config(cfg.to_dict())
    deploy.model.decoder.mixing.lorsa = None
    deploy.model.decoder.mixing.lorst = None
    deploy.model.setdefault('test_cfg', {})['merge_lors'] = False
    return deploy, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output checkpoint (.pth)')
    args = parser.parse_args()
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            parser.error(f'file does not exist: {path}')
    register_all_modules()
    deploy, state = merge_checkpoint(Config.fromfile(args.config),
                                     args.checkpoint)
    out_cfg = osp.splitext(args.out)[0] + '.py'
    deploy.dump(out_cfg)
    torch.save(dict(meta=dict(merged_from=osp.abspath(args.checkpoint)),
                    state_dict=state), args.out)
    print(f'deploy checkpoint: {args.out}\ndeploy config:     {out_cfg}')


if __name__ == '__main__':
    main()
