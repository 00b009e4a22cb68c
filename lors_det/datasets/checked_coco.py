"""``CocoDataset`` that checks its annotation file before training starts.

mmdet's ``CocoDataset`` trusts its input: a missing key surfaces as a
``KeyError`` deep in pycocotools, an annotation whose ``category_id`` is not
among the file's categories is dropped silently, an image that is listed but
not on disk fails only when the data loader reaches it (maybe hours into the
run), and an empty dataset makes the sampler fail with an unrelated error.
:class:`CheckedCocoDataset` validates everything it can when the dataset is
built (the Runner builds the train and val datasets before the first
iteration) and raises one error naming the file, the offending image or
annotation ids, and what was expected:

* ``data_root``, the annotation file and the image directory exist
  (``FileNotFoundError``);
* the file is JSON with the lists ``images`` and ``categories``, and
  ``annotations`` unless ``test_mode`` (image-info files such as COCO
  test-dev have none) (``ValueError``);
* image entries have unique ids, a ``file_name`` and positive ``width`` and
  ``height``; categories have unique ids and names; every class of the
  dataset's ``metainfo`` is a category name of the file;
* annotations have unique ids, an ``image_id`` among the images, a
  ``category_id`` among the file's categories, an ``area`` and a ``bbox`` of
  four finite numbers;
* every listed image exists on disk (local data; one directory listing per
  image directory, not one ``stat`` per image) (``FileNotFoundError``);
* the dataset is not empty after filtering (``ValueError``).

Degenerate boxes (``w <= 0`` or ``h <= 0``) in otherwise valid data are
dropped with a warning listing their annotation ids
(``degenerate_boxes='error'`` makes them an error instead).

Usage: ``dataset=dict(type='CheckedCocoDataset', ...)`` with the same
arguments as ``CocoDataset`` plus ``check_images`` and ``degenerate_boxes``.
"""
import copy
import json
import logging
import math
import os
import os.path as osp
import warnings
from collections import defaultdict
from typing import Dict, List

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

MAX_LISTED = 5


class DatasetWarning(UserWarning):
    """Data problems that are repaired (e.g. degenerate boxes dropped)."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and \
        math.isfinite(v)


def _listed(items: List[str]) -> str:
    more = f', ... ({len(items) - MAX_LISTED} more)' \
        if len(items) > MAX_LISTED else ''
    return '; '.join(items[:MAX_LISTED]) + more


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with input validation.

    Args:
        check_images (bool): check that every listed image file exists
            (local data only). Defaults to True.
        degenerate_boxes (str): ``'warn'`` drops boxes with ``w <= 0`` or
            ``h <= 0`` with a warning; ``'error'`` raises. Defaults to
            ``'warn'``.
        **kwargs: :class:`mmdet.datasets.CocoDataset` arguments.
    """

    def __init__(self,
                 *args,
                 check_images: bool = True,
                 degenerate_boxes: str = 'warn',
                 **kwargs):
        if degenerate_boxes not in ('warn', 'error'):
            raise ValueError("CheckedCocoDataset: degenerate_boxes must be "
                             f"'warn' or 'error', got {degenerate_boxes!r}")
        # set before super().__init__, which loads the annotations
        self.check_images = check_images
        self.degenerate_boxes = degenerate_boxes
        super().__init__(*args, **kwargs)

    # -- helpers -------------------------------------------------------------
    def _is_local(self) -> bool:
        return not self.backend_args and '://' not in str(self.ann_file)

    def _warn(self, msg: str) -> None:
        print_log(msg, logger='current', level=logging.WARNING)
        warnings.warn(msg, DatasetWarning, stacklevel=3)

    def _fail(self, msg: str, exc=ValueError):
        return exc(f"{type(self).__name__}: annotation file '{self.ann_file}'"
                   f': {msg}')

    # -- checks --------------------------------------------------------------
    def _check_paths(self) -> None:
        if not self._is_local():
            return
        root = self.data_root
        hint = ''
        if 'synthetic' in f'{root}{self.ann_file}':
            hint = (' Generate the synthetic data with `python '
                    'tools/misc/make_synthetic_coco.py --out <data_root>`.')
        if root and not osp.isdir(root):
            raise FileNotFoundError(
                f"{type(self).__name__}: data_root '{root}' does not exist "
                f'or is not a directory (ann_file={self.ann_file!r}). Set '
                'data_root in the config or with --cfg-options.' + hint)
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f"{type(self).__name__}: annotation file '{self.ann_file}' "
                'does not exist (data_root '
                f'{root!r} + ann_file).' + hint)
        img_dir = self.data_prefix.get('img', '')
        if self.check_images and img_dir and not osp.isdir(img_dir):
            raise FileNotFoundError(
                f"{type(self).__name__}: image directory '{img_dir}' "
                f"(data_prefix['img'] under data_root) does not exist; it "
                f"should hold the images of '{self.ann_file}'.")

    def _read_ann_file(self) -> dict:
        with get_local_path(
                self.ann_file, backend_args=self.backend_args) as local_path:
            try:
                with open(local_path, encoding='utf-8') as f:
                    data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise self._fail(f'not valid JSON ({e})') from e
        if not isinstance(data, dict):
            raise self._fail('expected a JSON object with the keys '
                             "'images', 'annotations' and 'categories', got "
                             f'a JSON {type(data).__name__}')
        return data

    def _check_structure(self, data: dict) -> None:
        required = ['images', 'categories']
        if not self.test_mode:
            required.insert(1, 'annotations')
        for key in required:
            if key not in data:
                raise self._fail(
                    f"missing the key '{key}'; a COCO detection file needs "
                    f"{required} (found keys: {sorted(data)})")
        for key in ('images', 'annotations', 'categories'):
            if key in data and not isinstance(data[key], list):
                raise self._fail(f"'{key}' must be a list, got "
                                 f'{type(data[key]).__name__}')
        data.setdefault('annotations', [])

    def _check_categories(self, data: dict) -> None:
        ids, names, bad = set(), {}, []
        for i, cat in enumerate(data['categories']):
            if not isinstance(cat, dict) or not isinstance(
                    cat.get('id'), int) or not isinstance(
                        cat.get('name'), str):
                bad.append(f'categories[{i}]={cat!r} (expected an int id '
                           'and a str name)')
            elif cat['id'] in ids:
                bad.append(f"duplicate category id {cat['id']}")
            else:
                ids.add(cat['id'])
                names[cat['name']] = cat['id']
        if bad:
            raise self._fail('invalid categories: ' + _listed(bad))
        classes = list(self.metainfo.get('classes') or [])
        missing = [c for c in classes if c not in names]
        if missing:
            raise self._fail(
                f'the classes {missing} of the dataset metainfo are not '
                f'category names of the file (its categories: '
                f'{list(names)}); fix metainfo.classes in the config')
        in_file_order = [n for n in names if n in set(classes)]
        if in_file_order != classes:
            self._warn(
                f"{type(self).__name__}: '{self.ann_file}': metainfo.classes "
                f'{classes} are not in the order of the file\'s categories '
                f'{in_file_order}; labels follow the file order, so class '
                'names in logs and per-class results would be mislabelled.')

    def _check_images(self, data: dict) -> Dict[int, dict]:
        images, bad = {}, []
        for i, img in enumerate(data['images']):
            if not isinstance(img, dict) or not isinstance(img.get('id'), int):
                bad.append(f'images[{i}] has no int id')
                continue
            img_id = img['id']
            if img_id in images:
                bad.append(f'duplicate image id {img_id}')
            elif not isinstance(img.get('file_name'), str) or \
                    not img['file_name']:
                bad.append(f'image id {img_id} has no file_name')
            elif not all(
                    _is_number(img.get(k)) and img[k] > 0
                    for k in ('width', 'height')):
                bad.append(f"image id {img_id} ({img['file_name']!r}) "
                           f"width={img.get('width')!r} height="
                           f"{img.get('height')!r} (expected positive "
                           'numbers)')
            images[img_id] = img
        if bad:
            raise self._fail(f'{len(bad)} invalid image entries: ' +
                             _listed(bad))
        return images

    def _check_annotations(self, data: dict, images: Dict[int, dict]):
        cat_ids = {c['id'] for c in data['categories']}
        ann_ids, bad, unknown_img, unknown_cat, degenerate = set(), [], [], \
            [], []
        kept = []
        for i, ann in enumerate(data['annotations']):
            if not isinstance(ann, dict) or 'id' not in ann:
                bad.append(f'annotations[{i}] has no id')
                continue
            aid = ann['id']
            if aid in ann_ids:
                bad.append(f'duplicate annotation id {aid}')
                continue
            ann_ids.add(aid)
            missing = [
                k for k in ('image_id', 'category_id', 'bbox', 'area')
                if k not in ann
            ]
            if missing:
                bad.append(f'annotation id {aid} has no {missing}')
                continue
            if ann['image_id'] not in images:
                unknown_img.append(
                    f"annotation id {aid} (image_id {ann['image_id']!r})")
                continue
            if ann['category_id'] not in cat_ids:
                unknown_cat.append(
                    f"annotation id {aid} (image id {ann['image_id']}, "
                    f"category_id {ann['category_id']!r})")
                continue
            box = ann['bbox']
            if not isinstance(box, (list, tuple)) or len(box) != 4 or \
                    not all(_is_number(v) for v in box):
                bad.append(f"annotation id {aid} (image id "
                           f"{ann['image_id']}) bbox={box!r} (expected "
                           '[x, y, w, h], four finite numbers)')
                continue
            if box[2] <= 0 or box[3] <= 0:
                degenerate.append(
                    f"annotation id {aid} (image id {ann['image_id']}, "
                    f'bbox {list(box)})')
                continue
            kept.append(ann)
        if bad:
            raise self._fail(f'{len(bad)} invalid annotations: ' +
                             _listed(bad))
        if unknown_img:
            raise self._fail(
                f'{len(unknown_img)} annotations refer to an image_id that '
                'is not in images: ' + _listed(unknown_img))
        if unknown_cat:
            raise self._fail(
                f'{len(unknown_cat)} annotations have a category_id that is '
                f'not in categories (known ids: {sorted(cat_ids)}): ' +
                _listed(unknown_cat))
        if degenerate:
            msg = (f'{len(degenerate)} degenerate boxes (width or height '
                   '<= 0): ' + _listed(degenerate))
            if self.degenerate_boxes == 'error':
                raise self._fail(msg)
            self._warn(f"{type(self).__name__}: '{self.ann_file}': {msg}; "
                       'dropped them.')
            data['annotations'] = kept

    def _check_files(self, images: Dict[int, dict]) -> None:
        if not (self.check_images and self._is_local()):
            return
        img_dir = self.data_prefix.get('img', '')
        listing: Dict[str, set] = {}
        by_dir = defaultdict(list)
        for img_id, img in images.items():
            path = osp.join(img_dir, img['file_name'])
            by_dir[osp.dirname(path)].append((img_id, path))
        missing = []
        for d, entries in by_dir.items():
            if d not in listing:
                try:
                    listing[d] = set(os.listdir(d or '.'))
                except OSError:
                    listing[d] = set()
            for img_id, path in entries:
                if osp.basename(path) not in listing[d]:
                    missing.append(f"image id {img_id} ('{path}')")
        if missing:
            raise self._fail(
                f'{len(missing)} of its {len(images)} images are not on '
                f"disk under '{img_dir}': " + _listed(missing),
                FileNotFoundError)

    # -- CocoDataset API -----------------------------------------------------
    def load_data_list(self) -> List[dict]:
        """Validate the annotation file, then build the data list as
        ``CocoDataset.load_data_list`` (mmdet 3.3.0) does, from the
        validated content (the file is parsed once)."""
        self._check_paths()
        data = self._read_ann_file()
        self._check_structure(data)
        self._check_categories(data)
        images = self._check_images(data)
        if not images:
            raise self._fail('lists no images (empty dataset)')
        self._check_annotations(data, images)
        self._check_files(images)

        coco = self.COCOAPI()
        coco.dataset = data
        coco.createIndex()
        coco.img_ann_map = coco.imgToAnns
        coco.cat_img_map = coco.catToImgs
        self.coco = coco

        # -- from here on: mmdet's CocoDataset.load_data_list --
        self.cat_ids = self.coco.get_cat_ids(
            cat_names=self.metainfo['classes'])
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.cat_img_map = copy.deepcopy(self.coco.cat_img_map)

        data_list = []
        for img_id in self.coco.get_img_ids():
            raw_img_info = self.coco.load_imgs([img_id])[0]
            raw_img_info['img_id'] = img_id
            ann_ids = self.coco.get_ann_ids(img_ids=[img_id])
            raw_ann_info = self.coco.load_anns(ann_ids)
            data_list.append(
                self.parse_data_info({
                    'raw_ann_info': raw_ann_info,
                    'raw_img_info': raw_img_info
                }))
        del self.coco
        return data_list

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if not data_list:
            raise self._fail(
                'no image is left after filtering (filter_cfg='
                f'{self.filter_cfg}, classes={self.metainfo.get("classes")}'
                '): no image has a usable annotation of these classes, so '
                'there is nothing to train on')
        return data_list
