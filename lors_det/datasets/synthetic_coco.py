"""A small, deterministic synthetic detection dataset in COCO format.

Each image is a dark, lightly textured background (a random base colour, a
linear gradient, a few soft low-frequency blotches and mild per-pixel noise)
with zero or more filled shapes drawn on it in bright, saturated colours:

* ``circle``   - a disc,
* ``square``   - an axis-aligned filled square,
* ``triangle`` - an equilateral triangle at a random rotation.

Shapes span about 8% to 60% of the shorter image side, always lie fully
inside the image and may overlap, but every shape keeps at least
``MIN_VISIBLE`` of its pixels visible (a placement that would hide more of an
earlier shape is re-drawn; after ``PLACEMENT_TRIES`` failures the shape is
left out, which is rare with the defaults).
Colours are chosen independently of the class, so the detector has to learn
the shapes. A fixed fraction of the images (``empty_ratio``) holds no objects.

The ``hard`` preset (``preset='hard'``) is made for ranking methods: 9
classes, colour x shape (``red_circle`` ... ``blue_triangle``; the colour is a
hue band, jittered by ``HUE_JITTER``), shapes of 8-96 px (log-uniform, so
small ones are common) on 256 px images, up to 12 objects per image that may
be up to half hidden (``HARD_MIN_VISIBLE``), and clutter that is not
annotated: the same shapes in yellow, cyan or magenta and thin lines of any
colour, drawn in a random order with the objects (so they occlude them too).
Its boxes are those of the whole shape (amodal), as in the default preset.

Every shape is first rasterised into its own mask with cv2 (no
anti-aliasing); its box is the tight box around that mask in COCO
``[x, y, w, h]`` form and its ``area`` is the mask's pixel count.

The same arguments always give byte-identical annotation files and
identical images (stored as lossless PNG). Train and val use seeds derived
from ``seed`` with ``numpy.random.SeedSequence``, so the splits differ.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np

SYNTHETIC_CLASSES = ('circle', 'square', 'triangle')
MIN_IMG_SIZE = 32
MIN_VISIBLE = 0.6
MIN_HUE_GAP = 25
PLACEMENT_TRIES = 20

# the hard preset: class colours and clutter colours as OpenCV hues (0..179)
HARD_COLOURS = (('red', 0), ('green', 60), ('blue', 120))
HARD_CLASSES = tuple(f'{colour}_{shape}' for colour, _ in HARD_COLOURS
                     for shape in SYNTHETIC_CLASSES)
CLUTTER_HUES = (30, 90, 150)  # yellow, cyan, magenta: never a class
HUE_JITTER = 8  # +- hue units; class and clutter bands stay 14 apart
HARD_MIN_VISIBLE = 0.5
HARD_MAX_CLUTTER_SHAPES = 4
HARD_MAX_LINES = 3

# make_synthetic_coco's defaults per preset (arguments given override them)
PRESETS = {
    'shapes':
    dict(
        num_train=64,
        num_val=16,
        img_size=128,
        min_objects=0,
        max_objects=4,
        empty_ratio=0.1,
        min_scale=0.08,
        max_scale=0.6),
    'hard':
    dict(
        num_train=1024,
        num_val=256,
        img_size=256,
        min_objects=1,
        max_objects=12,
        empty_ratio=0.05,
        min_scale=8 / 256,
        max_scale=96 / 256),
}


def _check_args(num_train, num_val, img_size, seed, min_objects, max_objects,
                empty_ratio, min_scale, max_scale):
    """Validate the arguments; return the image size as ``(W, H)``."""
    for name, value in (('num_train', num_train), ('num_val', num_val),
                        ('seed', seed), ('min_objects', min_objects),
                        ('max_objects', max_objects)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f'{name} must be an integer, got {value!r}')
        if value < 0:
            raise ValueError(f'{name} must be >= 0, got {value}')
    if max_objects < min_objects:
        raise ValueError(f'max_objects ({max_objects}) must be >= '
                         f'min_objects ({min_objects})')
    if not 0.0 <= empty_ratio <= 1.0:
        raise ValueError(f'empty_ratio must be in [0, 1], got {empty_ratio}')
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError('min_scale and max_scale must satisfy '
                         f'0 < min_scale <= max_scale <= 1, got {min_scale} '
                         f'and {max_scale}')
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) for s in size)
            or min(size) < MIN_IMG_SIZE):
        raise ValueError(f'img_size must be an int or a (W, H) pair of ints, '
                         f'each >= {MIN_IMG_SIZE}, got {img_size!r}')
    return int(size[0]), int(size[1])


def _background(rng, w, h):
    """A dark textured background: base colour, gradient and soft blotches."""
    base = rng.uniform(15, 80, size=3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / w + np.sin(angle) * ys / h)
    ramp = ramp[..., None] * rng.uniform(-25, 25, size=3)
    blotches = rng.uniform(-12, 12, size=(4, 4, 3))
    blotches = cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC)
    return base + ramp + blotches


def _bright_colour(rng, used_hues):
    """A saturated, bright BGR colour and its hue (OpenCV units, 0..179).

    The hue is re-drawn a few times to keep it away from ``used_hues``, so
    overlapping shapes rarely share a colour.
    """
    for _ in range(10):
        hue = int(rng.integers(0, 180))
        gaps = [min(abs(hue - u), 180 - abs(hue - u)) for u in used_hues]
        if min(gaps, default=180) >= MIN_HUE_GAP:
            break
    hsv = np.array([[[hue, rng.integers(150, 256),
                      rng.integers(200, 256)]]],
                   dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64), hue


def _shape_mask(rng, label, w, h, min_scale, max_scale, side=None):
    """Rasterise one randomly sized and placed shape into a binary mask.

    ``side`` (pixels) is drawn uniformly from the scales unless given.
    """
    if side is None:
        side = max(3.0, rng.uniform(min_scale, max_scale) * min(w, h))
    r = side / 2.0
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    mask = np.zeros((h, w), dtype=np.uint8)
    if label == 'circle':
        # A disc of radius r spans 2r + 1 pixels, hence the - 0.5.
        radius = max(1, int(r - 0.5))
        cv2.circle(mask, (int(cx), int(cy)), radius, 1, thickness=-1)
    elif label == 'square':
        x0, y0 = int(round(cx - r)), int(round(cy - r))
        x1, y1 = x0 + int(side) - 1, y0 + int(side) - 1
        cv2.rectangle(mask, (x0, y0), (x1, y1), 1, thickness=-1)
    else:  # triangle: vertices on the circle of radius r around the centre
        angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
        pts = np.clip(np.round(pts), 0, [w - 1, h - 1]).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask


def _tight_box(mask):
    """COCO ``[x, y, w, h]`` box around the non-zero pixels of ``mask``."""
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return [x0, y0, float(xs.max()) + 1.0 - x0, float(ys.max()) + 1.0 - y0]


def _keeps_others_visible(owner, mask, areas, min_visible=MIN_VISIBLE):
    """Whether painting ``mask`` on top leaves every earlier shape visible.

    ``owner`` maps each pixel to the index + 1 of the shape painted there
    last (0 for background, -1 for clutter); ``areas`` are the full pixel
    counts.
    """
    for k, area in enumerate(areas, start=1):
        visible = np.count_nonzero((owner == k) & (mask == 0))
        if visible < min_visible * area:
            return False
    return True


def _draw_image(rng, w, h, num_objects, min_scale, max_scale):
    """Draw one image; return it (uint8 BGR) and its ``(label, box, area)``.

    A shape that cannot be placed without hiding an earlier one in
    ``PLACEMENT_TRIES`` attempts is left out (rare with the defaults).
    """
    img = _background(rng, w, h)
    owner = np.zeros((h, w), dtype=np.int32)
    objects, hues = [], []
    for _ in range(num_objects):
        label = SYNTHETIC_CLASSES[rng.integers(len(SYNTHETIC_CLASSES))]
        for _ in range(PLACEMENT_TRIES):
            mask = _shape_mask(rng, label, w, h, min_scale, max_scale)
            areas = [area for _, _, area in objects]
            if _keeps_others_visible(owner, mask, areas):
                break
        else:
            continue
        owner[mask > 0] = len(objects) + 1
        colour, hue = _bright_colour(rng, hues)
        img[mask > 0] = colour
        hues.append(hue)
        objects.append((label, _tight_box(mask), float(mask.sum())))
    img += rng.normal(0.0, 6.0, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _hue_colour(rng, hue):
    """A saturated, bright BGR colour of ``hue`` +- ``HUE_JITTER``."""
    hue = int(round(hue + rng.uniform(-HUE_JITTER, HUE_JITTER))) % 180
    hsv = np.array([[[hue, rng.integers(140, 256),
                      rng.integers(140, 256)]]],
                   dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def _line_mask(rng, w, h):
    """A thin straight line (1-2 px) between two random points."""
    mask = np.zeros((h, w), dtype=np.uint8)
    p0, p1 = (tuple(int(v) for v in rng.integers(0, [w, h])) for _ in range(2))
    cv2.line(mask, p0, p1, 1, thickness=int(rng.integers(1, 3)))
    return mask


def _draw_hard_image(rng, w, h, num_objects, min_scale, max_scale):
    """Draw one image of the hard preset; like :func:`_draw_image`.

    Objects, clutter shapes and lines are drawn in a random order; any of
    them is re-placed (up to ``PLACEMENT_TRIES`` times, else left out) if it
    would hide more than ``1 - HARD_MIN_VISIBLE`` of an earlier object.
    """
    img = _background(rng, w, h)
    owner = np.zeros((h, w), dtype=np.int32)
    kinds = (['object'] * num_objects +
             ['clutter'] * int(rng.integers(HARD_MAX_CLUTTER_SHAPES + 1)) +
             ['line'] * int(rng.integers(HARD_MAX_LINES + 1)))
    log_sides = np.log([min_scale * min(w, h), max_scale * min(w, h)])
    objects = []
    for i in rng.permutation(len(kinds)):
        kind = kinds[i]
        shape = SYNTHETIC_CLASSES[rng.integers(len(SYNTHETIC_CLASSES))]
        colour_name, hue = HARD_COLOURS[rng.integers(len(HARD_COLOURS))]
        if kind == 'clutter':
            hue = CLUTTER_HUES[rng.integers(len(CLUTTER_HUES))]
        elif kind == 'line':
            hue = int(rng.integers(0, 180))
        areas = [area for _, _, area in objects]
        for _ in range(PLACEMENT_TRIES):
            if kind == 'line':
                mask = _line_mask(rng, w, h)
            else:
                side = float(np.exp(rng.uniform(*log_sides)))
                mask = _shape_mask(rng, shape, w, h, 0, 0, side=side)
            if _keeps_others_visible(owner, mask, areas, HARD_MIN_VISIBLE):
                break
        else:
            continue
        img[mask > 0] = _hue_colour(rng, hue)
        if kind == 'object':
            owner[mask > 0] = len(objects) + 1
            objects.append((f'{colour_name}_{shape}', _tight_box(mask),
                            float(mask.sum())))
        else:
            owner[mask > 0] = -1
    img += rng.normal(0.0, 8.0, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _make_split(img_dir,
                ann_file,
                num_images,
                seed_seq,
                size,
                min_objects,
                max_objects,
                empty_ratio,
                min_scale,
                max_scale,
                preset='shapes'):
    """Write the images of one split and its COCO annotation file."""
    draw, classes = ((_draw_hard_image, HARD_CLASSES) if preset == 'hard' else
                     (_draw_image, SYNTHETIC_CLASSES))
    rng = np.random.default_rng(seed_seq)
    w, h = size
    num_empty = int(round(empty_ratio * num_images))
    is_empty = np.zeros(num_images, dtype=bool)
    is_empty[rng.permutation(num_images)[:num_empty]] = True
    low = max(min_objects, 1)
    images, annotations = [], []
    for img_id in range(1, num_images + 1):
        n = 0
        if not is_empty[img_id - 1] and max_objects > 0:
            n = int(rng.integers(low, max_objects + 1))
        img, objects = draw(rng, w, h, n, min_scale, max_scale)
        file_name = f'{img_id - 1:06d}.png'
        cv2.imwrite(osp.join(img_dir, file_name), img)
        images.append(dict(id=img_id, file_name=file_name, width=w, height=h))
        for label, box, area in objects:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=img_id,
                    category_id=classes.index(label) + 1,
                    bbox=box,
                    area=area,
                    iscrowd=0))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(classes)
    ]
    description = 'lors_det synthetic shapes' + (' (hard preset)'
                                                 if preset == 'hard' else '')
    coco = dict(
        info=dict(description=description),
        images=images,
        annotations=annotations,
        categories=categories)
    with open(ann_file, 'w') as f:
        json.dump(coco, f)


def make_synthetic_coco(out_dir,
                        num_train=None,
                        num_val=None,
                        img_size=None,
                        seed=0,
                        min_objects=None,
                        max_objects=None,
                        empty_ratio=None,
                        min_scale=None,
                        max_scale=None,
                        preset='shapes'):
    """Generate the synthetic shapes dataset under ``out_dir``.

    An argument left at ``None`` takes the preset's value
    (``PRESETS[preset]``; the ``shapes`` values are given below).

    Args:
        out_dir (str): Output root; created if missing. Files of an
            earlier run are overwritten; extra images left over from a
            larger earlier run stay, but are not in the JSON files.
        num_train (int): Number of training images.
        num_val (int): Number of validation images.
        img_size (int | tuple[int, int]): Image side, or ``(W, H)``; >= 32.
        seed (int): Non-negative seed; same seed, same bytes.
        min_objects (int): Minimum shapes in a non-empty image (at least 1).
        max_objects (int): Maximum shapes in an image.
        empty_ratio (float): Fraction of each split with no shapes at all.
        min_scale (float): Smallest shape size, relative to the short side.
        max_scale (float): Largest shape size, relative to the short side.
        preset (str): ``'shapes'`` (3 shape classes, the default) or
            ``'hard'`` (9 colour x shape classes with clutter, see above).

    Returns:
        dict: Paths written: ``root``, ``train_img_dir``, ``val_img_dir``,
        ``train_ann_file`` and ``val_ann_file``.
    """
    if preset not in PRESETS:
        raise ValueError(f'preset must be one of {sorted(PRESETS)}, got '
                         f'{preset!r}')
    given = dict(
        num_train=num_train,
        num_val=num_val,
        img_size=img_size,
        min_objects=min_objects,
        max_objects=max_objects,
        empty_ratio=empty_ratio,
        min_scale=min_scale,
        max_scale=max_scale)
    args = {
        k: PRESETS[preset][k] if v is None else v
        for k, v in given.items()
    }
    size = _check_args(seed=seed, **args)
    num_train, num_val = args['num_train'], args['num_val']
    split_args = {
        k: args[k]
        for k in ('min_objects', 'max_objects', 'empty_ratio', 'min_scale',
                  'max_scale')
    }
    train_seed, val_seed = np.random.SeedSequence(int(seed)).spawn(2)
    paths = dict(root=str(out_dir))
    for split, num, seed_seq in (('train', num_train, train_seed),
                                 ('val', num_val, val_seed)):
        img_dir = osp.join(str(out_dir), split)
        ann_file = osp.join(
            str(out_dir), 'annotations', f'instances_{split}.json')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(osp.dirname(ann_file), exist_ok=True)
        _make_split(
            img_dir,
            ann_file,
            num,
            seed_seq,
            size,
            preset=preset,
            **split_args)
        paths[f'{split}_img_dir'] = img_dir
        paths[f'{split}_ann_file'] = ann_file
    return paths
