"""Tests for the synthetic COCO shapes dataset and its CLI."""
import json
import os.path as osp
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
from helpers import REPO_ROOT
from pycocotools.coco import COCO

from lors_det.datasets import SYNTHETIC_CLASSES, make_synthetic_coco

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
    for split, num in (('train', SMALL['num_train']), ('val',
                                                       SMALL['num_val'])):
        coco = load_json(dataset[f'{split}_ann_file'])
        assert len(coco['images']) == num
        for img in coco['images']:
            assert osp.isfile(
                osp.join(dataset[f'{split}_img_dir'], img['file_name']))
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
    train_boxes = [
        a['bbox'] for a in load_json(dataset['train_ann_file'])['annotations']
    ]
    val_boxes = [
        a['bbox'] for a in load_json(dataset['val_ann_file'])['annotations']
    ]
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
    paths = make_synthetic_coco(
        tmp_path,
        num_train=8,
        num_val=0,
        img_size=(64, 48),
        min_objects=1,
        max_objects=1,
        empty_ratio=0.0)
    coco = load_json(paths['train_ann_file'])
    assert len(coco['annotations']) == 8
    for img, ann in zip(coco['images'], coco['annotations']):
        pixels = cv2.imread(osp.join(paths['train_img_dir'], img['file_name']))
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
                            capture_output=True,
                            text=True,
                            check=True)
    return result.stdout


@pytest.mark.slow
def test_cli_skips_unless_forced_or_changed(tmp_path):
    out = str(tmp_path / 'syn')
    args = [
        '--out', out, '--num-train', '4', '--num-val', '2', '--img-size', '32',
        '--seed', '3', '--max-objects', '2'
    ]
    assert 'Wrote' in run_cli(*args)
    meta = load_json(osp.join(out, 'meta.json'))
    assert meta == dict(
        num_train=4, num_val=2, img_size=32, seed=3, max_objects=2)
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
    num_instances = sum(
        len(ds.get_data_info(i)['instances']) for i in range(len(ds)))
    assert num_instances == len(coco['annotations'])
    assert osp.isfile(ds.get_data_info(0)['img_path'])


# ---------------------------------------------------------------- presets
def pixel_and_json_digests(paths):
    """sha256 of each split's annotation file and of its decoded pixels."""
    import hashlib
    out = {}
    for split in ('train', 'val'):
        ann = read_bytes(paths[f'{split}_ann_file'])
        pixels = hashlib.sha256()
        for img in json.loads(ann)['images']:
            pixels.update(
                cv2.imread(
                    osp.join(paths[f'{split}_img_dir'],
                             img['file_name'])).tobytes())
        out[split] = (hashlib.sha256(ann).hexdigest(), pixels.hexdigest())
    return out


def test_default_preset_output_is_unchanged(dataset):
    """The bytes of the default data from before the presets were added
    (recorded from commit a28d1e9's generator): tests and the demo's
    published numbers depend on them. Pixels are compared decoded, so a
    different PNG encoder does not matter."""
    assert pixel_and_json_digests(dataset) == {
        'train':
        ('ff95f059f7b90e033bee9c2de8f678de3f2e9318df8c0d6049e49f07'
         'a24f4b37', 'd8c028065fd5d95cce1b226766c0c761e9880019be90171497b7e694'
         '6ac10bf3'),
        'val':
        ('db13fc4baf40106e999bf7abf1151cfa21e2ab1c3603e5a15a5cd00297'
         '6ad31b', 'cae57bdf6772d92a1d85cdd1a7dba584626c8f79191a35a52a06faa9f7'
         '907c87')
    }


HARD_SMALL = dict(num_train=16, num_val=2, preset='hard')


@pytest.fixture(scope='module')
def hard(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp('hard'), **HARD_SMALL)


def test_hard_preset_is_deterministic_per_seed(tmp_path):
    kwargs = dict(num_train=4, num_val=2, preset='hard', seed=5)
    first = make_synthetic_coco(tmp_path / 'first', **kwargs)
    again = make_synthetic_coco(tmp_path / 'again', **kwargs)
    assert pixel_and_json_digests(again) == pixel_and_json_digests(first)
    kwargs['seed'] = 6
    other = pixel_and_json_digests(
        make_synthetic_coco(tmp_path / 'other', **kwargs))
    for split, (ann, pixels) in pixel_and_json_digests(first).items():
        assert other[split][0] != ann and other[split][1] != pixels


def test_hard_preset_defaults():
    from lors_det.datasets.synthetic_coco import PRESETS
    hard = PRESETS['hard']
    assert hard['num_val'] >= 256 and hard['img_size'] == 256
    assert hard['min_scale'] * 256 == 8 and hard['max_scale'] * 256 == 96


def test_hard_preset_properties(hard):
    from lors_det.datasets.synthetic_coco import HARD_CLASSES
    coco = load_json(hard['train_ann_file'])
    names = [c['name'] for c in coco['categories']]
    assert names == list(HARD_CLASSES) and len(names) == 9
    assert {n.split('_')[0] for n in names} == {'red', 'green', 'blue'}
    assert {n.split('_')[1] for n in names} == set(SYNTHETIC_CLASSES)
    assert coco['info']['description'].endswith('(hard preset)')
    assert all((i['width'], i['height']) == (256, 256) for i in coco['images'])
    anns = coco['annotations']
    assert len({a['category_id'] for a in anns}) == 9
    sides = [max(a['bbox'][2:]) for a in anns]
    # an 8 px triangle's box can be 7 px wide; boxes never exceed 96 px
    assert min(sides) >= 7 and max(sides) <= 96
    assert sum(s < 16 for s in sides) > 0.2 * len(sides)  # many small ones
    assert max(sides) > 64
    per_image = Counter(a['image_id'] for a in anns)
    assert max(per_image.values()) <= 12 and max(per_image.values()) >= 8

    def overlap(a, b):
        ax, ay, aw, ah = a['bbox']
        bx, by, bw, bh = b['bbox']
        return (min(ax + aw, bx + bw) > max(ax, bx)
                and min(ay + ah, by + bh) > max(ay, by))

    occluded = sum(
        overlap(a, b) for i, a in enumerate(anns) for b in anns[i + 1:]
        if a['image_id'] == b['image_id'])
    assert occluded >= 10


def hue_mask(pixels, hues, jitter=10):
    """Bright, saturated pixels with a hue within ``jitter`` of ``hues``."""
    hsv = cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV).astype(int)
    gap = np.min([
        np.minimum(abs(hsv[..., 0] - h), 180 - abs(hsv[..., 0] - h))
        for h in hues
    ],
                 axis=0)
    return (gap <= jitter) & (hsv[..., 1] >= 120) & (hsv[..., 2] >= 120)


def test_hard_preset_has_unannotated_clutter(hard):
    """Yellow/cyan/magenta shapes are drawn and never annotated."""
    from lors_det.datasets.synthetic_coco import CLUTTER_HUES
    coco = load_json(hard['train_ann_file'])
    with_clutter = 0
    for img in coco['images']:
        pixels = cv2.imread(osp.join(hard['train_img_dir'], img['file_name']))
        outside = np.ones(pixels.shape[:2], dtype=bool)
        for a in coco['annotations']:
            if a['image_id'] == img['id']:
                x, y, w, h = map(int, a['bbox'])
                outside[y:y + h, x:x + w] = False
        clutter = (hue_mask(pixels, CLUTTER_HUES) & outside).astype(np.uint8)
        # erosion removes the lines (<= 3 px wide) of any colour, keeps
        # shapes (>= 7 px)
        clutter = cv2.erode(clutter, np.ones((5, 5), np.uint8))
        with_clutter += clutter.sum() >= 4
    assert with_clutter >= len(coco['images']) // 3


def test_hard_preset_colour_names_the_class(tmp_path, monkeypatch):
    """With one object and no clutter per image, the object's pixels have
    the hue its class names (the class is colour x shape, not shape)."""
    from lors_det.datasets import synthetic_coco
    monkeypatch.setattr(synthetic_coco, 'HARD_MAX_CLUTTER_SHAPES', 0)
    monkeypatch.setattr(synthetic_coco, 'HARD_MAX_LINES', 0)
    paths = make_synthetic_coco(
        tmp_path,
        num_train=12,
        num_val=0,
        min_objects=1,
        max_objects=1,
        empty_ratio=0.0,
        preset='hard')
    coco = load_json(paths['train_ann_file'])
    hues = dict(red=0, green=60, blue=120)  # OpenCV hues, not the module's
    names = {c['id']: c['name'] for c in coco['categories']}
    assert len(coco['annotations']) == 12
    for img, ann in zip(coco['images'], coco['annotations']):
        pixels = cv2.imread(osp.join(paths['train_img_dir'], img['file_name']))
        x, y, w, h = map(int, ann['bbox'])
        box = pixels[y:y + h, x:x + w]
        colour = names[ann['category_id']].split('_')[0]
        own = hue_mask(box, [hues[colour]]).mean()
        others = max(
            hue_mask(box, [v]).mean() for k, v in hues.items() if k != colour)
        assert own > 0.3 and others < 0.05, (ann, own, others)


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match='preset'):
        make_synthetic_coco(tmp_path / 'bad', preset='harder')
    assert not (tmp_path / 'bad').exists()


@pytest.mark.slow
def test_cli_hard_preset(tmp_path):
    out = str(tmp_path / 'hard')
    stdout = run_cli('--out', out, '--preset', 'hard', '--num-train', '2',
                     '--num-val', '1')
    assert 'Wrote' in stdout
    assert load_json(osp.join(out, 'meta.json')) == dict(
        num_train=2,
        num_val=1,
        img_size=256,
        seed=0,
        max_objects=12,
        preset='hard')
    coco = load_json(osp.join(out, 'annotations', 'instances_val.json'))
    assert len(coco['categories']) == 9
    assert 'up to date' in run_cli('--out', out, '--preset', 'hard',
                                   '--num-train', '2', '--num-val', '1')
