"""Bad input fails early and clearly: ``CheckedCocoDataset``.

Every test starts from a copy of the synthetic COCO data, breaks one thing
and checks that building the dataset (which the Runner does before the first
iteration) raises an error naming the file, the offending id and what was
expected; degenerate boxes are dropped with a warning instead.
"""
import copy
import glob
import json
import os
import os.path as osp
import shutil
import signal
import traceback

import pytest
from helpers import ADAMIXER_CFG, CLASSES
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.runner import Runner

from lors_det.datasets import CheckedCocoDataset
from lors_det.datasets.checked_coco import DatasetWarning

ANN = 'annotations/instances_train.json'


@pytest.fixture
def data(synthetic_root, tmp_path):
    """A private copy of the synthetic data and its train annotations."""
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    with open(root / ANN) as f:
        coco = json.load(f)
    return root, coco


def _write(root, coco, name=ANN):
    with open(root / name, 'w') as f:
        json.dump(coco, f)


def _build(root, test_mode=False, type='CheckedCocoDataset', **kwargs):
    cfg = dict(
        type=type,
        data_root=str(root),
        ann_file=ANN,
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=CLASSES),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        test_mode=test_mode,
        pipeline=[])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def _raises(exc, root, *parts, **build_kwargs):
    with pytest.raises(exc) as info:
        _build(root, **build_kwargs)
    msg = str(info.value)
    for part in parts:
        assert part in msg, f'{part!r} not in: {msg}'
    return msg


def test_valid_data_gives_exactly_cocodatasets_data_list(data):
    root, _ = data
    ours = _build(root)
    theirs = _build(root, type='CocoDataset')
    assert isinstance(ours, CheckedCocoDataset)
    assert isinstance(theirs, CocoDataset)
    assert len(ours) == len(theirs) == 8
    assert [ours.get_data_info(i) for i in range(len(ours))] == \
        [theirs.get_data_info(i) for i in range(len(theirs))]


def test_the_annotation_file_is_parsed_once_by_mmdets_own_loader(
        data, monkeypatch):
    """The checks read the file; mmdet's ``CocoDataset.load_data_list``
    (not a copy of it) builds the data list from that content."""
    root, _ = data
    loads, mmdet_calls = [], []
    real_load = json.load
    monkeypatch.setattr(json, 'load',
                        lambda f, **kw: loads.append(f) or real_load(f, **kw))
    real_mmdet = CocoDataset.load_data_list
    monkeypatch.setattr(
        CocoDataset, 'load_data_list',
        lambda self: mmdet_calls.append(self) or real_mmdet(self))
    dataset = _build(root)
    assert len(loads) == 1 and len(mmdet_calls) == 1
    assert len(dataset) == 8


def test_synthetic_config_uses_the_checked_dataset():
    cfg = Config.fromfile(ADAMIXER_CFG)
    assert cfg.train_dataloader.dataset.type == 'CheckedCocoDataset'
    assert cfg.val_dataloader.dataset.type == 'CheckedCocoDataset'


# ---------------------------------------------------------------------------
# missing files and directories
# ---------------------------------------------------------------------------
def test_missing_data_root(tmp_path):
    missing = str(tmp_path / 'no_such_root')
    _raises(FileNotFoundError, missing, f"data_root '{missing}' does not "
            'exist')


def test_missing_annotation_file(data):
    root, _ = data
    os.remove(root / ANN)
    _raises(FileNotFoundError, root,
            f"annotation file '{root / ANN}' does not exist")


def test_missing_image_directory(data):
    root, _ = data
    shutil.rmtree(root / 'train')
    _raises(FileNotFoundError, root, f"image directory '{root / 'train'}",
            'does not exist')


def test_image_listed_but_absent_on_disk(data):
    root, coco = data
    img = coco['images'][3]
    os.remove(root / 'train' / img['file_name'])
    _raises(FileNotFoundError, root, str(root / ANN), '1 of its 8 images',
            f"image id {img['id']}", img['file_name'])


# ---------------------------------------------------------------------------
# malformed annotation files
# ---------------------------------------------------------------------------
def test_not_json(data):
    root, _ = data
    (root / ANN).write_text('{"images": [')
    _raises(ValueError, root, str(root / ANN), 'not valid JSON')


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_missing_top_level_key(data, key):
    root, coco = data
    del coco[key]
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN), f"missing the key '{key}'")


@pytest.mark.parametrize('bbox', [[1.0, 2.0, 3.0], [1.0, 2.0, 'w', 4.0],
                                  [1.0, float('nan'), 3.0, 4.0], None])
def test_malformed_bbox(data, bbox):
    root, coco = data
    ann = coco['annotations'][5]
    ann['bbox'] = bbox
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN), f"annotation id {ann['id']}",
            'bbox', 'expected [x, y, w, h]')


def test_unknown_category_id(data):
    root, coco = data
    ann = coco['annotations'][2]
    ann['category_id'] = 42
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN), f"annotation id {ann['id']}",
            f"image id {ann['image_id']}", 'category_id 42',
            'known ids: [1, 2, 3]')


def test_annotation_of_unknown_image(data):
    root, coco = data
    ann = coco['annotations'][0]
    ann['image_id'] = 999
    _write(root, coco)
    _raises(ValueError, root, f"annotation id {ann['id']} (image_id 999)",
            'not in images')


def test_duplicate_ids(data):
    root, coco = data
    good = copy.deepcopy(coco)
    coco['annotations'][1]['id'] = coco['annotations'][0]['id']
    _write(root, coco)
    _raises(ValueError, root,
            f"duplicate annotation id {coco['annotations'][0]['id']}")
    good['images'][1]['id'] = good['images'][0]['id']
    _write(root, good)
    _raises(ValueError, root, f"duplicate image id {good['images'][0]['id']}")


def test_class_missing_from_categories(data):
    root, _ = data
    _raises(
        ValueError,
        root,
        "the classes ['hexagon']",
        "categories: ['circle', 'square', 'triangle']",
        metainfo=dict(classes=('circle', 'hexagon')))


def test_image_without_size(data):
    root, coco = data
    coco['images'][2]['width'] = 0
    _write(root, coco)
    _raises(ValueError, root, f"image id {coco['images'][2]['id']}", 'width=0',
            'expected positive numbers')


# ---------------------------------------------------------------------------
# empty datasets
# ---------------------------------------------------------------------------
def test_no_images(data):
    root, coco = data
    coco['images'], coco['annotations'] = [], []
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN), 'lists no images')


def test_nothing_left_after_filtering(data):
    root, coco = data
    coco['annotations'] = []
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN), 'no image is left after '
            'filtering', 'filter_empty_gt')


# ---------------------------------------------------------------------------
# degenerate boxes: dropped with a warning
# ---------------------------------------------------------------------------
def test_degenerate_boxes_are_dropped_with_a_warning(data):
    root, coco = data
    anns = coco['annotations']
    # two boxes of an image that keeps at least one good box
    img_id = next(i['id'] for i in coco['images']
                  if sum(a['image_id'] == i['id'] for a in anns) >= 3)
    zero_w, neg_h = [a for a in anns if a['image_id'] == img_id][:2]
    zero_w['bbox'][2] = 0.0
    neg_h['bbox'][3] = -3.0
    n_before = sum(a['image_id'] == zero_w['image_id'] for a in anns)
    _write(root, coco)
    with pytest.warns(DatasetWarning) as record:
        ds = _build(root)
    msg = ' '.join(str(w.message) for w in record)
    assert 'degenerate (width or height <= 0): 2 (' in msg
    assert str(root / ANN) in msg
    assert f"annotation id {zero_w['id']}" in msg
    assert f"annotation id {neg_h['id']}" in msg
    assert len(ds) == 8  # nothing else lost
    info = next(
        ds.get_data_info(i) for i in range(len(ds))
        if ds.get_data_info(i)['img_id'] == zero_w['image_id'])
    assert len(info['instances']) == n_before - 2
    assert all(b['bbox'][2] > b['bbox'][0] and b['bbox'][3] > b['bbox'][1]
               for b in info['instances'])
    # ... or an error, if asked for
    _raises(
        ValueError,
        root,
        'degenerate (width or height <= 0): 2 (',
        degenerate_boxes='error')


# ---------------------------------------------------------------------------
# the failure comes before any training step
# ---------------------------------------------------------------------------
def test_training_fails_before_the_first_iteration(tiny_config, data,
                                                   tmp_path):
    root, coco = data
    coco['annotations'][0]['category_id'] = 7
    _write(root, coco)
    cfg = Config.fromfile(tiny_config)
    cfg.train_dataloader.dataset.data_root = str(root)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = cfg.visualizer.name = 'bad_data_run'
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='category_id 7'):
        runner.train()
    assert runner.message_hub.get_info('iter') is None  # no iteration ran
    assert not glob.glob(osp.join(cfg.work_dir, '*.pth'))
    assert not glob.glob(
        osp.join(cfg.work_dir, '*', 'vis_data', 'scalars.json'))


# ---------------------------------------------------------------------------
# issue 13, item 6: categories, unusable boxes, empty splits, unreadable
# images and non-numeric fields
# ---------------------------------------------------------------------------
def test_duplicate_category_names(data):
    root, coco = data
    # labels follow the categories: 4 categories for 3 classes shift them
    coco['categories'].append(dict(id=4, name='circle', supercategory='x'))
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN),
            "duplicate category name 'circle'", 'category ids [1, 4]')


def _anns_of_an_image_with(coco, n):
    """The annotations of the first image that has at least ``n``."""
    by_img = {}
    for a in coco['annotations']:
        by_img.setdefault(a['image_id'], []).append(a)
    return next(anns for anns in by_img.values() if len(anns) >= n)


def test_dropped_and_clipped_boxes_are_counted_in_one_warning(data):
    root, coco = data
    anns = coco['annotations']  # images are 64 x 64
    zero_area, outside, clipped = _anns_of_an_image_with(coco, 4)[:3]
    zero_area['area'] = 0.0
    outside['bbox'] = [70.0, 10.0, 5.0, 5.0]
    clipped['bbox'] = [50.0, 50.0, 30.0, 10.0]
    # 7 boxes thinner than a pixel: the warning lists the first 5 ids
    thin = [a for a in anns if a not in (zero_area, outside, clipped)][:7]
    for a in thin:
        a['bbox'][2] = 0.5
    _write(root, coco)
    with pytest.warns(DatasetWarning) as record:
        ds = _build(root)
    msgs = [
        str(w.message) for w in record
        if issubclass(w.category, DatasetWarning)
    ]
    assert len(msgs) == 1, msgs  # once per dataset
    msg = msgs[0]
    assert str(root / ANN) in msg
    for part in ('area <= 0: 1 (', f"annotation id {zero_area['id']}",
                 'entirely outside the image: 1 (',
                 f"annotation id {outside['id']}",
                 'narrower or lower than 1 pixel: 7 (', '(2 more)',
                 'partly outside the image (kept;', 'the image): 1 (',
                 f"annotation id {clipped['id']}"):
        assert part in msg, f'{part!r} not in: {msg}'
    for a in thin[:5]:
        assert f"annotation id {a['id']} (" in msg
    assert f"annotation id {thin[5]['id']} (" not in msg
    # the boxes mmdet drops are dropped; the partly outside one is kept as
    # it is (Resize clips it). mmdet keeps an image whose boxes were all
    # dropped (then without boxes); filter_empty_gt removes it here.
    theirs, ours = ({
        d['img_id']: [i['bbox'] for i in d['instances']]
        for d in map(dataset.get_data_info, range(len(dataset)))
    } for dataset in (_build(root, type='CocoDataset'), ds))
    assert ours == {k: v for k, v in theirs.items() if v}
    assert [50.0, 50.0, 80.0, 60.0] in ours[clipped['image_id']]
    # degenerate_boxes='error': dropped boxes are an error, clipped ones not
    msg = _raises(
        ValueError,
        root,
        str(root / ANN),
        'area <= 0: 1 (',
        'narrower or lower than 1 pixel: 7 (',
        degenerate_boxes='error')
    assert 'partly outside' not in msg


@pytest.mark.parametrize('case', ['all_crowd', 'no_annotations'])
def test_train_set_without_usable_boxes(data, case):
    root, coco = data
    filter_cfg = dict(filter_empty_gt=True, min_size=0)
    if case == 'all_crowd':
        for a in coco['annotations']:
            a['iscrowd'] = 1
    else:  # every image is kept, none has a box
        coco['annotations'] = []
        filter_cfg['filter_empty_gt'] = False
    _write(root, coco)
    _raises(
        ValueError,
        root,
        str(root / ANN),
        'no usable boxes in the train set',
        filter_cfg=filter_cfg)


@pytest.mark.parametrize('case', ['no_key', 'empty_list'])
def test_val_set_without_annotations(data, case):
    root, coco = data
    if case == 'no_key':
        del coco['annotations']
    else:
        coco['annotations'] = []
    _write(root, coco)
    _raises(
        ValueError,
        root,
        str(root / ANN),
        'test_mode=True',
        'no annotations',
        'allow_unannotated=True',
        test_mode=True)
    # an unlabelled test set (e.g. COCO test-dev), when the config says so
    assert len(_build(root, test_mode=True, allow_unannotated=True)) == 8


def test_allow_unannotated_is_a_real_bool(data):
    root, _ = data
    with pytest.raises(
            ValueError,
            match=r"CheckedCocoDataset.allow_unannotated must be "
            r"True or False, got 'no' \(str\)"):
        _build(root, test_mode=True, allow_unannotated='no')


def _make_unreadable(path, case):
    os.remove(path)
    if case == 'empty_file':
        open(path, 'wb').close()
    elif case == 'fifo':
        os.mkfifo(path)  # opening it for reading would block forever
    elif case == 'directory':
        os.mkdir(path)
    else:  # text saved under an image name
        with open(path, 'w') as f:
            f.write('not an image, but long enough to have a header')


@pytest.mark.parametrize('case,expected',
                         [('empty_file', 'is empty (0 bytes)'),
                          ('fifo', 'is not a regular file (a FIFO)'),
                          ('directory', 'is not a regular file (a directory)'),
                          ('text', 'does not start like a JPEG, PNG')])
def test_unreadable_image_file(data, case, expected):
    root, coco = data
    img = coco['images'][2]
    path = root / 'train' / img['file_name']
    _make_unreadable(path, case)
    signal.alarm(60)  # a FIFO opened by mistake fails instead of hanging
    try:
        _raises(ValueError, root, str(root / ANN), f"image id {img['id']}",
                f"'{path}'", expected)
        # check_images='stat' opens no file: the header is not checked
        if case == 'text':
            assert len(_build(root, check_images='stat')) == 8
        else:
            _raises(ValueError, root, expected, check_images='stat')
    finally:
        signal.alarm(0)


@pytest.mark.parametrize('case', ['empty_file', 'text'])
def test_pipeline_names_the_path_of_an_unreadable_image(data, case):
    root, coco = data
    img = coco['images'][2]
    ds = _build(root, pipeline=[dict(type='LoadImageFromFile')])
    path = root / 'train' / img['file_name']
    _make_unreadable(path, case)  # damaged after the build
    idx = next(
        i for i in range(len(ds))
        if ds.get_data_info(i)['img_id'] == img['id'])
    with pytest.raises(Exception) as info:
        ds[idx]
    msg = ''.join(traceback.format_exception_only(info.type, info.value))
    assert str(path) in msg, msg
    assert f"image id {img['id']}" in msg, msg


@pytest.mark.parametrize(
    'section,field,value,expected',
    [('annotations', 'category_id', '1', 'expected an int'),
     ('annotations', 'category_id', 1.0, 'expected an int'),
     ('annotations', 'image_id', '1', 'expected an int'),
     ('annotations', 'id', '5', 'expected an int'),
     ('annotations', 'area', 'big', 'expected a finite number'),
     ('annotations', 'iscrowd', '0', 'expected 0 or 1'),
     ('annotations', 'bbox', [1.0, 2.0, '3', 4.0], 'expected [x, y, w, h]'),
     ('images', 'width', '64', 'expected positive numbers')])
def test_non_numeric_fields(data, section, field, value, expected):
    root, coco = data
    index = 3
    entry = coco[section][index]
    # an entry is named by its id, or by its index when the id is bad
    name = f'{section}[{index}]' if field == 'id' else \
        f"{section[:-1]} id {entry['id']}"
    entry[field] = value
    _write(root, coco)
    _raises(ValueError, root, str(root / ANN), name, f'{field}={value!r}',
            expected)
