"""demo/image_demo.py: DetInferencer with the weights read by our checkpoint
reader (class names from the checkpoint's meta)."""
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from helpers import LORS_CFG, REPO_ROOT, SYNTHETIC, build_model, run

DEMO = osp.join(REPO_ROOT, 'demo', 'image_demo.py')


@pytest.mark.slow
def test_image_demo_writes_detections(tmp_path):
    import cv2

    from lors_det.engine.fileio import save_checkpoint
    torch.manual_seed(0)
    model = build_model(SYNTHETIC['lors'])
    ckpt = str(tmp_path / 'lors.pth')
    save_checkpoint(
        dict(
            state_dict=model.state_dict(),
            meta=dict(
                dataset_meta=dict(classes=('circle', 'square', 'triangle')))),
        ckpt)
    image = str(tmp_path / 'img.png')
    canvas = np.zeros((96, 128, 3), np.uint8)
    cv2.rectangle(canvas, (20, 20), (60, 70), (255, 255, 255), -1)
    cv2.imwrite(image, canvas)
    out_dir = str(tmp_path / 'out')
    run([
        sys.executable, DEMO, image, LORS_CFG, '--weights', ckpt, '--out-dir',
        out_dir, '--score-thr', '0'
    ])
    assert osp.isfile(osp.join(out_dir, 'vis', 'img.png'))
    with open(osp.join(out_dir, 'preds', 'img.json')) as f:
        preds = json.load(f)
    assert len(preds['labels']) == model.num_queries  # max_per_img = N
    assert all(0 <= label < 3 for label in preds['labels'])
