"""Fold a LORS checkpoint's LORST output linears into dense per-stage weights
for deployment.

    python tools/model_converters/lors_merge.py CONFIG CHECKPOINT OUT

writes OUT (checkpoint) and OUT's name with ``.py`` (the deploy config: the
same model with ``lorst=None``, i.e. one dense output linear per stage).
``tools/test.py DEPLOY_CONFIG OUT`` then gives the same detections as the
LORS model without rebuilding W_i = W_shared + B_i A_i at every call. The
deploy model is larger (one dense W_i per stage): this trades parameters
for speed; keep the LORS checkpoint as the training asset.
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
from lors_det.lors import LORSTLinear  # noqa: E402


def merge_checkpoint(cfg: Config, checkpoint: str):
    """Returns (deploy config, deploy state dict) for a LORS checkpoint."""
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    lorst = {n: m for n, m in model.named_modules()
             if isinstance(m, LORSTLinear)}
    if not lorst:
        raise ValueError(f'{cfg.filename}: the model has no LORST layer '
                         '(mixing.lorst is not set); nothing to merge')
    state = model.state_dict()
    for name, module in lorst.items():
        for key in list(state):
            if key.startswith(name + '.'):
                del state[key]
        state.update({f'{name}.{k}': v
                      for k, v in module.dense_state_dict().items()})
    deploy = Config(cfg.to_dict())
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
