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
  ``annotations`` unless ``test_mode``; a val/test set (``test_mode=True``)
  without annotations is an error (its evaluation reports mAP -1) unless
  ``allow_unannotated=True`` says it is an unlabelled test set such as
  COCO test-dev (``ValueError``);
* image entries have unique int ids, a ``file_name`` and positive numbers as
  ``width`` and ``height``; categories have unique int ids and unique names
  (a repeated name shifts the labels); every class of the dataset's
  ``metainfo`` is a category name of the file;
* annotations have unique int ids, an int ``image_id`` among the images, an
  int ``category_id`` among the file's categories, a finite number as
  ``area``, ``iscrowd`` 0 or 1 (if present) and a ``bbox`` of four finite
  numbers;
* every listed image is a non-empty regular file (``os.stat``: a FIFO or a
  directory is never opened) whose first bytes are those of a JPEG, PNG,
  BMP, GIF, TIFF, WebP, PNM or JPEG 2000 image (local data; one ``stat``
  and a 12-byte read per image) (``FileNotFoundError`` for missing files,
  ``ValueError`` otherwise);
* the dataset is not empty after filtering and a train set
  (``test_mode=False``) has at least one usable box (``ValueError``).

Boxes that mmdet's ``CocoDataset`` drops silently (width or height <= 0,
entirely outside the image, area <= 0, narrower or lower than 1 pixel) are
dropped here too, and boxes partly outside the image (which the transforms
clip) are kept; both are reported in one warning per dataset, counted per
reason with their first annotation ids (``degenerate_boxes='error'`` makes
the dropped ones an error). When the pipeline fails on an image later (e.g.
a file damaged after the build), the error names the image id and path.

Usage: ``dataset=dict(type='CheckedCocoDataset', ...)`` with the same
arguments as ``CocoDataset`` plus ``check_images``, ``degenerate_boxes`` and
``allow_unannotated``.
"""
import json
import logging
import math
import os
import os.path as osp
import re
import stat
import warnings
from typing import Dict, List, Optional, Union

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from ..lors.checks import check_bool, first_few

MAX_LISTED = 5
# A box sticking out of the image by less than this (in pixels) is rounding
# of the annotation tool, not worth a warning.
CLIP_TOLERANCE = 1.0
HEADER_BYTES = 12
# (format, pattern of its first bytes): formats OpenCV (mmcv's default
# decoder) reads, told apart by the first HEADER_BYTES bytes of a file.
IMAGE_MAGIC = [
    ('JPEG', rb'\xff\xd8\xff'),
    ('PNG', rb'\x89PNG\r\n\x1a\n'),
    ('BMP', rb'BM'),
    ('GIF', rb'GIF8[79]a'),
    ('TIFF', rb'II\*\x00|MM\x00\*'),
    ('WebP', rb'RIFF.{4}WEBP'),  # the 4 bytes: the chunk size
    ('JPEG 2000', rb'\xffO\xffQ|\x00\x00\x00\x0cjP  \r\n\x87\n'),
    ('PNM', rb'P[1-6]'),
]
IMAGE_FORMATS = 'a JPEG, PNG, BMP, GIF, TIFF, WebP, PNM or JPEG 2000 image'
# what os.stat can find instead of a regular file
FILE_TYPES = [(stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'),
              (stat.S_ISSOCK, 'a socket'),
              (stat.S_ISCHR, 'a character device'),
              (stat.S_ISBLK, 'a block device')]
# Reasons a box is dropped (as mmdet's CocoDataset.parse_data_info drops
# them) or reported, in the order they are tested; see _box_problem.
BOX_PROBLEMS = {
    'degenerate':
    'degenerate (width or height <= 0)',
    'outside':
    'entirely outside the image',
    'area':
    'area <= 0',
    'thin':
    'narrower or lower than 1 pixel',
    'clipped':
    'partly outside the image (kept; transforms such as Resize '
    'clip them to the image)',
}
DROPPED = ('degenerate', 'outside', 'area', 'thin')


class DatasetWarning(UserWarning):
    """Data problems that are repaired (e.g. degenerate boxes dropped)."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and \
        math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _image_format(head: bytes) -> Optional[str]:
    """The format whose magic bytes ``head`` (a file's first bytes) has."""
    return next(
        (name
         for name, magic in IMAGE_MAGIC if re.match(magic, head, re.DOTALL)),
        None)


def _file_type(mode: int) -> str:
    return next((name for is_type, name in FILE_TYPES if is_type(mode)),
                f'mode {oct(mode)}')


def _box_problem(box: list, area: float, width: float,
                 height: float) -> Optional[str]:
    """Why mmdet's ``CocoDataset`` (3.3.0) drops the COCO box ``[x, y, w,
    h]`` (a key of ``BOX_PROBLEMS``), ``'clipped'`` if it is partly outside
    the ``width`` x ``height`` image, None if it is fine."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return 'degenerate'
    inter_w = max(0, min(x + w, width) - max(x, 0))
    inter_h = max(0, min(y + h, height) - max(y, 0))
    if inter_w * inter_h == 0:
        return 'outside'
    if area <= 0:
        return 'area'
    if w < 1 or h < 1:
        return 'thin'
    if min(x, y) < -CLIP_TOLERANCE or x + w > width + CLIP_TOLERANCE or \
            y + h > height + CLIP_TOLERANCE:
        return 'clipped'
    return None


def _listed(items: List[str]) -> str:
    return first_few(items, MAX_LISTED, sep='; ')


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with input validation.

    Args:
        check_images (bool | str): ``True`` (or ``'header'``): every listed
            image is a non-empty regular file starting with the magic bytes
            of an image format (one ``stat`` and a 12-byte read per image);
            ``'stat'``: the same without opening any file (no format check;
            for slow network file systems); ``False``: no check. Local data
            only. Defaults to True.
        degenerate_boxes (str): ``'warn'`` drops the boxes mmdet's
            ``CocoDataset`` drops (width or height <= 0 or < 1 pixel, area
            <= 0, entirely outside the image) with a warning; ``'error'``
            raises. Defaults to ``'warn'``.
        allow_unannotated (bool): accept a val/test set (``test_mode=True``)
            without annotations, e.g. COCO test-dev's image-info file (then
            only ``format_only`` evaluation makes sense). Defaults to False.
        **kwargs: :class:`mmdet.datasets.CocoDataset` arguments.
    """

    def __init__(self,
                 *args,
                 check_images: Union[bool, str] = True,
                 degenerate_boxes: str = 'warn',
                 allow_unannotated: bool = False,
                 **kwargs):
        if degenerate_boxes not in ('warn', 'error'):
            raise ValueError("CheckedCocoDataset: degenerate_boxes must be "
                             f"'warn' or 'error', got {degenerate_boxes!r}")
        if not (isinstance(check_images, bool)
                or check_images in ('header', 'stat')):
            raise ValueError("CheckedCocoDataset: check_images must be True, "
                             f"False, 'header' or 'stat', got "
                             f'{check_images!r}')
        check_bool('CheckedCocoDataset.allow_unannotated', allow_unannotated)
        # set before super().__init__, which loads the annotations
        self.check_images = 'header' if check_images is True else \
            check_images
        self.degenerate_boxes = degenerate_boxes
        self.allow_unannotated = allow_unannotated
        self._num_annotations = self._num_dropped = 0
        self._validated: Optional[dict] = None  # during load_data_list
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
        if self.test_mode and not data.get('annotations') and \
                not self.allow_unannotated:
            what = "an empty 'annotations' list" if 'annotations' in data \
                else "no 'annotations' key"
            raise self._fail(
                f'test_mode=True (a val/test set) but the file has no '
                f'annotations ({what}): evaluating on it reports mAP -1. Use '
                'the annotated file, or set allow_unannotated=True in the '
                'dataset config for an unlabelled test set (e.g. COCO '
                'test-dev image info, with format_only evaluation)')
        data.setdefault('annotations', [])

    def _check_categories(self, data: dict) -> None:
        ids, names, bad = set(), {}, []
        for i, cat in enumerate(data['categories']):
            if not isinstance(cat, dict) or not _is_int(
                    cat.get('id')) or not isinstance(cat.get('name'), str):
                bad.append(f'categories[{i}]={cat!r} (expected an int id '
                           'and a str name)')
            elif cat['id'] in ids:
                bad.append(f"duplicate category id {cat['id']}")
            else:
                ids.add(cat['id'])
                names.setdefault(cat['name'], []).append(cat['id'])
        # mmdet maps every category of a class name to a label of its own,
        # so a repeated name shifts the labels past the last class
        bad += [
            f"duplicate category name '{name}' (category ids {cat_ids}; "
            'expected one category per name)'
            for name, cat_ids in names.items() if len(cat_ids) > 1
        ]
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
            if not isinstance(img, dict) or not _is_int(img.get('id')):
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

    def _invalid_annotation(self, i: int, ann,
                            images: Dict[int, dict]) -> Optional[str]:
        """What is wrong with the fields of ``annotations[i]``, or None."""
        if not isinstance(ann, dict) or 'id' not in ann:
            return f'annotations[{i}] has no id'
        if not _is_int(ann['id']):
            return f"annotations[{i}] id={ann['id']!r} (expected an int)"
        missing = [
            k for k in ('image_id', 'category_id', 'bbox', 'area')
            if k not in ann
        ]
        if missing:
            return f"annotation id {ann['id']} has no {missing}"
        name = f"annotation id {ann['id']}"
        if not _is_int(ann['image_id']):
            return f"{name} image_id={ann['image_id']!r} (expected an int)"
        if ann['image_id'] in images:
            name += f" (image id {ann['image_id']})"
        box, crowd = ann['bbox'], ann.get('iscrowd', 0)
        box_ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(
            _is_number(v) for v in box)
        checks = [
            ('category_id', _is_int(ann['category_id']), 'an int'),
            ('bbox', box_ok, '[x, y, w, h], four finite numbers'),
            ('area', _is_number(ann['area']), 'a finite number'),
            ('iscrowd', _is_int(crowd) and crowd in (0, 1), '0 or 1'),
        ]
        for field, ok, expected in checks:
            if not ok:
                return f'{name} {field}={ann[field]!r} (expected {expected})'
        return None

    def _check_annotations(self, data: dict, images: Dict[int, dict]):
        cat_ids = {c['id'] for c in data['categories']}
        ann_ids, bad, unknown_img, unknown_cat = set(), [], [], []
        boxes = {reason: [] for reason in BOX_PROBLEMS}
        kept = []
        for i, ann in enumerate(data['annotations']):
            problem = self._invalid_annotation(i, ann, images)
            if problem:
                bad.append(problem)
                continue
            aid = ann['id']
            if aid in ann_ids:
                bad.append(f'duplicate annotation id {aid}')
                continue
            ann_ids.add(aid)
            if ann['image_id'] not in images:
                unknown_img.append(
                    f"annotation id {aid} (image_id {ann['image_id']!r})")
                continue
            if ann['category_id'] not in cat_ids:
                unknown_cat.append(
                    f"annotation id {aid} (image id {ann['image_id']}, "
                    f"category_id {ann['category_id']!r})")
                continue
            img = images[ann['image_id']]
            reason = _box_problem(ann['bbox'], ann['area'], img['width'],
                                  img['height'])
            if reason:
                boxes[reason].append(
                    f"annotation id {aid} (image id {ann['image_id']}, "
                    f"bbox {list(ann['bbox'])})")
            if reason not in DROPPED:
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
        self._num_annotations = len(data['annotations'])
        self._num_dropped = self._num_annotations - len(kept)
        self._report_boxes(boxes)
        data['annotations'] = kept

    def _report_boxes(self, boxes: Dict[str, List[str]]) -> None:
        """One warning (or error) counting the dropped and clipped boxes
        per reason, with the first ``MAX_LISTED`` of each."""

        def lines(reasons):
            return ''.join(f'\n  {BOX_PROBLEMS[r]}: {len(boxes[r])} ('
                           f'{_listed(boxes[r])})' for r in reasons
                           if boxes[r])

        if self._num_dropped and self.degenerate_boxes == 'error':
            raise self._fail(
                f'{self._num_dropped} of its {self._num_annotations} boxes '
                "would be dropped (by mmdet's CocoDataset, silently); fix "
                "them or set degenerate_boxes='warn':" + lines(DROPPED))
        num_clipped = len(boxes['clipped'])
        if self._num_dropped or num_clipped:
            self._warn(
                f"{type(self).__name__}: '{self.ann_file}': of its "
                f'{self._num_annotations} boxes, {self._num_dropped} dropped '
                "(mmdet's CocoDataset drops them silently) and "
                f'{num_clipped} partly outside the image:' +
                lines(BOX_PROBLEMS))

    def _check_files(self, images: Dict[int, dict]) -> None:
        """Every image is a non-empty regular file (``os.stat``; a FIFO is
        never opened) and, with ``check_images='header'``, starts with the
        magic bytes of an image format (a 12-byte read)."""
        if not (self.check_images and self._is_local()):
            return
        img_dir = self.data_prefix.get('img', '')
        missing, unreadable = [], []
        for img_id, img in images.items():
            path = osp.join(img_dir, img['file_name'])
            name = f"image id {img_id} '{path}'"
            try:
                st = os.stat(path)
            except FileNotFoundError:
                missing.append(f"image id {img_id} ('{path}')")
                continue
            except OSError as e:
                unreadable.append(f'{name} cannot be read ({e.strerror})')
                continue
            if not stat.S_ISREG(st.st_mode):
                unreadable.append(f'{name} is not a regular file '
                                  f'({_file_type(st.st_mode)})')
            elif st.st_size == 0:
                unreadable.append(f'{name} is empty (0 bytes)')
            elif self.check_images == 'header':
                try:
                    with open(path, 'rb') as f:
                        head = f.read(HEADER_BYTES)
                except OSError as e:
                    unreadable.append(f'{name} cannot be read '
                                      f'({e.strerror})')
                    continue
                if _image_format(head) is None:
                    unreadable.append(
                        f'{name} does not start like {IMAGE_FORMATS} '
                        f'(first bytes {head!r})')
        if missing:
            raise self._fail(
                f'{len(missing)} of its {len(images)} images are not on '
                f"disk under '{img_dir}': " + _listed(missing),
                FileNotFoundError)
        if unreadable:
            raise self._fail(
                f'{len(unreadable)} of its {len(images)} images are not '
                f'readable image files (expected {IMAGE_FORMATS}; '
                "check_images='stat' skips the format check): " +
                _listed(unreadable))

    def _check_usable_boxes(self, data_list: List[dict]) -> None:
        """A train set without one non-crowd box of its classes trains on
        nothing (mmdet keeps images with only crowd boxes, and every image
        with ``filter_empty_gt=False``)."""
        instances = [i for d in data_list for i in d['instances']]
        if self.test_mode or any(i['ignore_flag'] == 0 for i in instances):
            return
        raise self._fail(
            'no usable boxes in the train set (test_mode=False): its '
            f'{len(data_list)} images left after filtering (filter_cfg='
            f'{self.filter_cfg}) have no box of the classes '
            f'{self.metainfo.get("classes")} with iscrowd=0 ({len(instances)}'
            ' crowd regions, iscrowd=1, which training only ignores); the '
            f'file has {self._num_annotations} annotations, '
            f'{self._num_dropped} of them dropped as unusable boxes. Expected '
            'at least one box with iscrowd=0 to train on')

    # -- CocoDataset API -----------------------------------------------------
    def load_data_list(self) -> List[dict]:
        """Validate the annotation file, then ``CocoDataset.load_data_list``
        (mmdet's own, unchanged) builds the data list from the validated
        content (:meth:`COCOAPI`: the file is parsed once)."""
        self._check_paths()
        data = self._read_ann_file()
        self._check_structure(data)
        self._check_categories(data)
        images = self._check_images(data)
        if not images:
            raise self._fail('lists no images (empty dataset)')
        self._check_annotations(data, images)
        self._check_files(images)
        self._validated = data
        try:
            return super().load_data_list()
        finally:
            self._validated = None

    def COCOAPI(self, local_path: str) -> COCO:  # noqa: N802 (mmdet's name)
        """The COCO API over the validated content. mmdet's subclass point:
        ``CocoDataset.load_data_list`` calls ``self.COCOAPI(ann_file)``
        (LVIS sets it to its API class); here it is not read again."""
        coco = COCO()
        coco.dataset = self._validated
        coco.createIndex()
        # mmdet's COCO wrapper names these in __init__, before the index
        coco.img_ann_map, coco.cat_img_map = coco.imgToAnns, coco.catToImgs
        return coco

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if not data_list:
            raise self._fail(
                'no image is left after filtering (filter_cfg='
                f'{self.filter_cfg}, classes={self.metainfo.get("classes")}'
                '): no image has a usable annotation of these classes, so '
                'there is nothing to train on')
        self._check_usable_boxes(data_list)
        return data_list

    def prepare_data(self, idx: int):
        """``BaseDataset.prepare_data``, with the image id and path added to
        an error of the pipeline (mmcv's ``LoadImageFromFile`` does not name
        the file when OpenCV rejects an empty one)."""
        data_info = self.get_data_info(idx)  # an IndexError stays one
        img_id, img_path = data_info.get('img_id'), data_info.get('img_path')
        try:
            return self.pipeline(data_info)
        except Exception as e:
            error = type(e).__qualname__
            if type(e).__module__ != 'builtins':  # e.g. cv2.error
                error = f'{type(e).__module__}.{error}'
            raise RuntimeError(
                f"{type(self).__name__}: annotation file '{self.ann_file}': "
                f"the pipeline failed on image id {img_id} ('{img_path}'): "
                f'{error}: {e}') from e
