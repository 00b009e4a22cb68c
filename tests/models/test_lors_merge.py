"""Merging LORS is an explicit call on the detector: merged inference gives
the unmerged outputs (with non-zero private parts), nothing merges behind
the caller's back, training refuses merged weights, and the converter's
deploy model computes the same."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from helpers import REPO_ROOT, SYNTHETIC, build_model, load_config, make_batch


def randomised_lors_model():
    torch.manual_seed(0)
    model = build_model(SYNTHETIC['lors']).eval()
    with torch.no_grad():
        for name, p in model.decoder.mixing.named_parameters():
            if 'private' in name or 'factors' in name:
                p.normal_(std=0.05)
    return model


def detections(model, inputs, samples):
    with torch.no_grad():
        results = model.predict(inputs, samples)
    return [(r.pred_instances.bboxes.clone(), r.pred_instances.scores.clone(),
             r.pred_instances.labels.clone()) for r in results]


def assert_same_detections(a, b):
    for (boxes_a, scores_a, labels_a), (boxes_b, scores_b, labels_b) in zip(
            a, b):
        torch.testing.assert_close(boxes_a, boxes_b)
        torch.testing.assert_close(scores_a, scores_b)
        assert torch.equal(labels_a, labels_b)


def test_merge_lors_gives_the_same_detections_and_unmerge_restores():
    model = randomised_lors_model()
    inputs, samples = make_batch(num_images=2)
    ref = detections(model, inputs, samples)
    assert not model.lors_merged  # predict merges nothing by itself
    stacks = [model.decoder.mixing.generator, model.decoder.mixing.out_proj]
    model.merge_lors()
    assert model.lors_merged and all(s.merged for s in stacks)
    assert_same_detections(detections(model, inputs, samples), ref)
    # the merged path is really used: changing the parameters under it does
    # not change the detections until unmerged
    with torch.no_grad():
        model.decoder.mixing.out_proj.private_B[5].mul_(3.0)
    assert_same_detections(detections(model, inputs, samples), ref)
    model.unmerge_lors()
    assert not model.lors_merged and not any(s.merged for s in stacks)
    changed = detections(model, inputs, samples)
    assert not torch.allclose(changed[0][1], ref[0][1])


def test_training_refuses_merged_weights():
    model = randomised_lors_model()
    inputs, samples = make_batch(num_images=1, num_gts=(2, ))
    model.merge_lors()
    model.train()
    with pytest.raises(RuntimeError, match='unmerge_lors'):
        model.loss(inputs, samples)
    model.unmerge_lors()
    assert all(torch.isfinite(v) for v in model.loss(inputs, samples).values())


def test_merge_lors_needs_lors_and_test_cfg_switch_is_gone():
    with pytest.raises(ValueError, match='no LORS layer'):
        build_model(SYNTHETIC['adamixer']).merge_lors()
    cfg = load_config(SYNTHETIC['lors'])
    cfg.model.test_cfg = dict(merge_lors=True)
    from mmdet.registry import MODELS
    with pytest.raises(TypeError, match=r'model.merge_lors\(\)'):
        MODELS.build(cfg.model)


def test_lors_merge_converter(tmp_path):
    model = randomised_lors_model()
    ckpt = tmp_path / 'lors.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = tmp_path / 'deploy.pth'
    subprocess.run([
        sys.executable, 'tools/model_converters/lors_merge.py',
        osp.join(REPO_ROOT, SYNTHETIC['lors']), str(ckpt), str(out)
    ], cwd=REPO_ROOT, check=True, capture_output=True)
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
