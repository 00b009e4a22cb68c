"""Merging LORS is an explicit call on the detector: merged inference gives
the unmerged outputs (with non-zero private parts), nothing merges behind
the caller's back, training refuses merged weights, and the converter's
deploy model computes the same."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT, SYNTHETIC, build_model, load_config, make_batch
from mmengine.config import Config


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
    for (boxes_a, scores_a, labels_a), (boxes_b, scores_b,
                                        labels_b) in zip(a, b):
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


@pytest.mark.slow
def test_lors_merge_converter(tmp_path):
    model = randomised_lors_model()
    ckpt = tmp_path / 'lors.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = tmp_path / 'deploy.pth'
    subprocess.run([
        sys.executable, 'tools/model_converters/lors_merge.py',
        osp.join(REPO_ROOT, SYNTHETIC['lors']),
        str(ckpt),
        str(out)
    ],
                   cwd=REPO_ROOT,
                   check=True,
                   capture_output=True)
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
        for (c1,
             b1), (c2,
                   b2) in zip(model._forward(inputs), deploy._forward(inputs)):
            torch.testing.assert_close(c1, c2, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(b1, b2, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------
# LORSWrapper (projects/lors_mmdet): the deploy model is the mmdet detector
# ---------------------------------------------------------------------------
WRAPPED = {
    'sparse_rcnn':
    'projects/lors_mmdet/configs/synthetic/'
    'sparse-rcnn-lors_tiny_synthetic.py',
    'dino':
    'projects/lors_mmdet/configs/synthetic/'
    'dino-4scale-lors_tiny_synthetic.py',
}


def randomised_wrapper(path):
    """A LORSWrapper with non-zero private parts (a zero B proves
    nothing)."""
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(load_config(path).model)
    model.init_weights()
    with torch.no_grad():
        for name, p in model.lors.named_parameters():
            if '.private_B.' in name or '.private_generators.' in name:
                p.normal_(std=0.1)
    return model.eval()


def wrapped_outputs(model, inputs, samples):
    with torch.no_grad():
        out = model(inputs, samples, mode='tensor')
    flat = []

    def walk(o):
        if torch.is_tensor(o):
            flat.append(o)
        elif isinstance(o, dict):
            [walk(o[k]) for k in sorted(o)]
        elif isinstance(o, (list, tuple)):
            [walk(x) for x in o]

    walk(out)
    assert flat
    return flat


@pytest.mark.parametrize('name', sorted(WRAPPED))
def test_deploy_of_a_wrapper_is_the_unwrapped_mmdet_detector(name):
    from mmdet.registry import MODELS

    from lors_det.models.deploy import to_deploy
    cfg = load_config(WRAPPED[name])
    model = randomised_wrapper(WRAPPED[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deploy_cfg, state = to_deploy(cfg, model)
    assert deploy_cfg.model.type == cfg.model.detector.type
    plain = MODELS.build(deploy_cfg.model).eval()
    plain.load_state_dict(state, strict=True)  # every key, no extra one
    inputs, samples = make_batch()
    for a, b in zip(
            wrapped_outputs(model, inputs, samples),
            wrapped_outputs(plain, inputs, samples)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # the LORS model is unchanged (still shared, same weights)
    assert all(s.is_shared for s in model.lors.values())
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_lors_merge_converter_on_a_wrapper_config(tmp_path):
    from mmdet.registry import MODELS
    path = WRAPPED['sparse_rcnn']
    model = randomised_wrapper(path)
    ckpt = tmp_path / 'lors.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = tmp_path / 'deploy.pth'
    proc = subprocess.run([
        sys.executable, 'tools/model_converters/lors_merge.py',
        osp.join(REPO_ROOT, path),
        str(ckpt),
        str(out)
    ],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deploy_cfg = Config.fromfile(str(tmp_path / 'deploy.py'))
    # the deploy config is mmdet's own model, as the unwrapped config has it
    plain_cfg = load_config(path).model.detector
    assert deploy_cfg.model.to_dict() == plain_cfg.to_dict()
    plain = MODELS.build(plain_cfg).eval()
    plain.load_state_dict(torch.load(out)['state_dict'], strict=True)
    inputs, samples = make_batch()
    for a, b in zip(
            wrapped_outputs(model, inputs, samples),
            wrapped_outputs(plain, inputs, samples)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
