"""Merged LORS inference gives the unmerged outputs (with non-zero private
parts), in the model, through the test-time switch and the converter."""
import os.path as osp
import subprocess
import sys

import torch
from mmengine.config import Config

from conftest import REPO, SYNTHETIC, build_model, make_batch


def randomised_lors_model():
    torch.manual_seed(0)
    model = build_model(SYNTHETIC['lors']).eval()
    with torch.no_grad():
        for name, p in model.decoder.mixing.named_parameters():
            if 'private' in name or 'factors' in name:
                p.normal_(std=0.05)
    return model


def test_merge_switch_gives_same_detections_and_training_unmerges():
    model = randomised_lors_model()
    inputs, samples = make_batch(num_images=2)
    with torch.no_grad():
        ref = model.predict(inputs, samples)
        ref_boxes = [r.pred_instances.bboxes.clone() for r in ref]
        model.decoder.test_cfg['merge_lors'] = True
        merged = model.predict(inputs, samples)
    assert model.decoder.mixing.out_proj.merged
    assert model.decoder.mixing.generator.merged
    for r, b in zip(merged, ref_boxes):
        torch.testing.assert_close(r.pred_instances.bboxes, b)
    model.train()
    model.loss(inputs, samples)
    assert not model.decoder.mixing.out_proj.merged
    assert not model.decoder.mixing.generator.merged


def test_lors_merge_converter(tmp_path):
    model = randomised_lors_model()
    ckpt = tmp_path / 'lors.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = tmp_path / 'deploy.pth'
    subprocess.run([
        sys.executable, 'tools/model_converters/lors_merge.py',
        osp.join(REPO, SYNTHETIC['lors']), str(ckpt), str(out)
    ], cwd=REPO, check=True, capture_output=True)
    deploy_cfg = Config.fromfile(str(tmp_path / 'deploy.py'))
    assert deploy_cfg.model.decoder.mixing.lorst is None
    assert deploy_cfg.model.decoder.mixing.lorsa is None
    from mmdet.registry import MODELS
    deploy = MODELS.build(deploy_cfg.model).eval()
    deploy.load_state_dict(torch.load(out)['state_dict'], strict=True)
    # the deploy model is AdaMixer's unshared decoder
    assert type(deploy.decoder.mixing.out_proj).__name__ == 'StackedLinear'
    assert type(deploy.decoder.mixing.generator).__name__ == \
        'StackedGenerator'
    inputs, _ = make_batch(num_images=2)
    with torch.no_grad():
        for (c1, b1), (c2, b2) in zip(model._forward(inputs),
                                      deploy._forward(inputs)):
            torch.testing.assert_close(c1, c2, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(b1, b2, rtol=1e-4, atol=1e-3)
