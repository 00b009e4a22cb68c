"""Tests for the synthetic COCO shapes dataset and its CLI."""
import json
import os.path as osp
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from lors_det.datasets import SYNTHETIC_CLASSES, make_synthetic_coco

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLI = osp.join(REPO_ROOT, 'tools', 'misc', 'make_synthetic_coco.py')
SMALL = dict(num_train=20, num_val=6, img_size=64)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """One small dataset shared by the read-only tests."""
    out = tmp_path_factory.mktemp('synthetic')
    return make_synthetic_coco(out, **SMALL)


def read_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def load_json(path):
    with open(path) as f:
        return json.load(f)


def test_layout(dataset):
    root = dataset['root']
    assert dataset['train_img_dir'] == osp.join(root, 'train')
    assert dataset['val_ann_file'] == osp.join(root, 'annotations',
                                               'instances_val.json')
    for split, num in (('train', SMALL['num_train']),
                       ('val', SMALL['num_val'])):
        coco = load_json(dataset[f'{split}_ann_file'])
        assert len(coco['images']) == num
        for img in coco['images']:
            assert osp.isfile(osp.join(dataset[f'{split}_img_dir'],
                                       img['file_name']))
    assert osp.isfile(osp.join(root, 'train', '000000.png'))


def test_same_seed_is_deterministic(tmp_path, dataset):
    again = make_synthetic_coco(tmp_path / 'again', **SMALL)
    for split in ('train', 'val'):
        ann_a, ann_b = dataset[f'{split}_ann_file'], again[f'{split}_ann_file']
        assert read_bytes(ann_a) == read_bytes(ann_b)
        for img in load_json(ann_a)['images']:
            a = osp.join(dataset[f'{split}_img_dir'], img['file_name'])
            b = osp.join(again[f'{split}_img_dir'], img['file_name'])
            assert read_bytes(a) == read_bytes(b)
            assert np.array_equal(cv2.imread(a), cv2.imread(b))


def test_different_seed_differs(tmp_path, dataset):
    other = make_synthetic_coco(tmp_path / 'other', seed=1, **SMALL)
    assert (read_bytes(other['train_ann_file']) != read_bytes(
        dataset['train_ann_file']))
    a = cv2.imread(osp.join(dataset['train_img_dir'], '000000.png'))
    b = cv2.imread(osp.join(other['train_img_dir'], '000000.png'))
    assert not np.array_equal(a, b)


def test_train_and_val_differ(dataset):
    train = cv2.imread(osp.join(dataset['train_img_dir'], '000000.png'))
    val = cv2.imread(osp.join(dataset['val_img_dir'], '000000.png'))
    assert not np.array_equal(train, val)
    train_boxes = [a['bbox'] for a in
                   load_json(dataset['train_ann_file'])['annotations']]
    val_boxes = [a['bbox'] for a in
                 load_json(dataset['val_ann_file'])['annotations']]
    assert train_boxes[:len(val_boxes)] != val_boxes


def test_annotations_are_valid_coco(dataset):
    for split in ('train', 'val'):
        coco = COCO(dataset[f'{split}_ann_file'])
        cat_ids = sorted(coco.getCatIds())
        assert cat_ids == list(range(1, len(SYNTHETIC_CLASSES) + 1))
        names = [coco.cats[i]['name'] for i in cat_ids]
        assert tuple(names) == SYNTHETIC_CLASSES
        assert sorted(coco.imgs) == list(range(1, len(coco.imgs) + 1))
        assert sorted(coco.anns) == list(range(1, len(coco.anns) + 1))
        for ann in coco.anns.values():
            img = coco.imgs[ann['image_id']]
            x, y, w, h = ann['bbox']
            assert all(isinstance(v, float) for v in ann['bbox'])
            assert w > 0 and h > 0 and ann['area'] > 0
            assert x >= 0 and y >= 0
            assert x + w <= img['width'] and y + h <= img['height']
            assert ann['category_id'] in cat_ids
            assert ann['iscrowd'] == 0


def test_empty_and_crowded_images(dataset):
    coco = load_json(dataset['train_ann_file'])
    counts = Counter(a['image_id'] for a in coco['annotations'])
    per_image = [counts[img['id']] for img in coco['images']]
    assert per_image.count(0) == round(0.1 * SMALL['num_train'])
    assert max(per_image) >= 2
    assert max(per_image) <= 4
    assert len(set(a['category_id'] for a in coco['annotations'])) == 3


def test_boxes_are_tight(tmp_path):
    """With one shape per image its bright pixels span exactly its box."""
    paths = make_synthetic_coco(tmp_path, num_train=8, num_val=0,
                                img_size=(64, 48), min_objects=1,
                                max_objects=1, empty_ratio=0.0)
    coco = load_json(paths['train_ann_file'])
    assert len(coco['annotations']) == 8
    for img, ann in zip(coco['images'], coco['annotations']):
        pixels = cv2.imread(osp.join(paths['train_img_dir'],
                                     img['file_name']))
        assert pixels.shape == (48, 64, 3)
        ys, xs = np.nonzero(pixels.max(axis=2) > 160)
        x0, y0 = xs.min(), ys.min()
        assert ann['bbox'] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]


@pytest.mark.parametrize('kwargs, field', [
    (dict(num_train=-1), 'num_train'),
    (dict(num_val=-2), 'num_val'),
    (dict(img_size=16), 'img_size'),
    (dict(img_size=(64, 31)), 'img_size'),
    (dict(seed=-1), 'seed'),
    (dict(min_objects=-1), 'min_objects'),
    (dict(min_objects=3, max_objects=2), 'max_objects'),
    (dict(empty_ratio=1.5), 'empty_ratio'),
    (dict(min_scale=0.7, max_scale=0.6), 'min_scale'),
])
def test_argument_errors_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_synthetic_coco(tmp_path / 'bad', **kwargs)
    assert not (tmp_path / 'bad').exists()


def run_cli(*args):
    result = subprocess.run([sys.executable, CLI, *args],
                            capture_output=True, text=True, check=True)
    return result.stdout


def test_cli_skips_unless_forced_or_changed(tmp_path):
    out = str(tmp_path / 'syn')
    args = ['--out', out, '--num-train', '4', '--num-val', '2',
            '--img-size', '32', '--seed', '3', '--max-objects', '2']
    assert 'Wrote' in run_cli(*args)
    meta = load_json(osp.join(out, 'meta.json'))
    assert meta == dict(num_train=4, num_val=2, img_size=32, seed=3,
                        max_objects=2)
    ann = read_bytes(osp.join(out, 'annotations', 'instances_train.json'))

    assert 'up to date' in run_cli(*args)
    assert 'Wrote' in run_cli(*args, '--force')
    assert read_bytes(osp.join(out, 'annotations',
                               'instances_train.json')) == ann

    assert 'Wrote' in run_cli(*args[:-1], '1')  # --max-objects changed
    assert load_json(osp.join(out, 'meta.json'))['max_objects'] == 1


def test_mmdet_coco_dataset_loads_it(dataset):
    from mmdet.datasets import CocoDataset
    coco = load_json(dataset['train_ann_file'])
    ds = CocoDataset(
        metainfo=dict(classes=SYNTHETIC_CLASSES),
        data_root=dataset['root'],
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=[],
        filter_cfg=None)
    assert len(ds) == len(coco['images'])
    num_instances = sum(len(ds.get_data_info(i)['instances'])
                        for i in range(len(ds)))
    assert num_instances == len(coco['annotations'])
    assert osp.isfile(ds.get_data_info(0)['img_path'])
