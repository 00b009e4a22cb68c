# The synthetic shapes data (lors_det.datasets.make_synthetic_coco, or
# tools/misc/make_synthetic_coco.py) at 64 px, for the tiny configs in
# ../synthetic. Only new names (synthetic_*): the model's base already
# defines mmdet's data_root, pipelines and loaders, and mmengine refuses a
# name defined by two bases. A tiny config sets
#   train_dataloader = {{_base_.synthetic_train_dataloader}}  # and val/test
synthetic_root = 'data/synthetic/'
synthetic_metainfo = dict(classes=('circle', 'square', 'triangle'))
synthetic_img_scale = (64, 64)

synthetic_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=synthetic_img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
synthetic_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=synthetic_img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
synthetic_train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=synthetic_root,
        metainfo=synthetic_metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=synthetic_train_pipeline))
synthetic_val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=synthetic_root,
        metainfo=synthetic_metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=synthetic_test_pipeline))
synthetic_val_evaluator = dict(ann_file=synthetic_root +
                               'annotations/instances_val.json')
