"""Tiny models and batches built from the shipped configs, for the tests
(imported as a module: ``from builders import build_model``)."""
import math
import os

import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC = {
    'adamixer': 'configs/synthetic/adamixer_tiny_synthetic.py',
    'lors': 'configs/synthetic/adamixer-lors_tiny_synthetic.py',
}


def load_config(rel_path: str) -> Config:
    return Config.fromfile(os.path.join(REPO, rel_path))


def build_model(rel_path: str, **decoder_overrides):
    from mmdet.registry import MODELS
    cfg = load_config(rel_path)
    cfg.model.decoder.update(decoder_overrides)
    return MODELS.build(cfg.model)


def make_batch(num_images=2, size=64, num_gts=(2, 0), num_classes=3,
               seed=0):
    """Random images with random boxes; ``num_gts[i]`` objects in image i."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_images, 3, size, size, generator=g)
    samples = []
    for i in range(num_images):
        n = num_gts[i % len(num_gts)]
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = torch.rand(n, 2, generator=g) * size * 0.3 + 4
        sample = DetDataSample(metainfo=dict(
            img_shape=(size, size), ori_shape=(size * 2, size * 2),
            pad_shape=(size, size), scale_factor=(0.5, 0.5),
            batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1),
            labels=torch.randint(0, num_classes, (n, ), generator=g))
        samples.append(sample)
    return inputs, samples


def assert_xavier_uniform(weight: torch.Tensor) -> None:
    """``weight`` (out, in) looks drawn from Xavier-uniform: inside the
    bound sqrt(6 / (in + out)) and with its standard deviation (within 10%),
    which ``nn.Linear``'s default init (bound 1 / sqrt(in)) does not have
    unless out is about 5 * in."""
    out_features, in_features = weight.shape
    bound = math.sqrt(6.0 / (in_features + out_features))
    assert weight.abs().max() <= bound
    std = weight.detach().double().std().item()
    assert abs(std / (bound / math.sqrt(3.0)) - 1) < 0.1, (std, bound)
