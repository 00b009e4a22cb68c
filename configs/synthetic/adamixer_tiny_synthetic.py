# AdaMixer on the synthetic shapes data (tools/misc/make_synthetic_coco.py),
# sized for a CPU: ResNet-18 from scratch, 128 px images, 20 queries,
# C = 64. Everything else (losses, matching, schedule shape) is the COCO
# recipe inherited from the R50 1x config.
_base_ = '../adamixer/adamixer_r50_8xb2-1x_coco.py'

data_root = 'data/synthetic/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
img_scale = (128, 128)

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    query_generator=dict(num_queries=20, content_dim=64),
    decoder=dict(
        num_classes=3,
        content_dim=64,
        num_groups=2,
        in_points=16,
        out_points=32,
        stage=dict(num_heads=4, feedforward_channels=256)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Schedule sized for tools/demo.py's split (1024 train / 64 val images at
# 128 px: 231 iterations of 4 images per epoch): 6 epochs, x0.1 for the
# last one, validation every epoch (README: the demo's measured time and
# AP). The COCO recipe's structure is kept (AdamW, wd
# 1e-4, grad-norm clip 1.0, linear warm-up, step decay), but the lr is 20x
# COCO's 2.5e-5 (which is for a batch of 16 and a pretrained backbone):
# ResNet-18 and the decoder train from scratch here, and 5e-4 learned
# fastest of 2.5e-4 / 5e-4 / 1.5e-3 (1.5e-3 stalls). On the generator's
# default 64-image split train ~16x more epochs, e.g. `tools/demo.py
# --data-root data/synthetic --num-train 64 --num-val 16 --epochs 96`
# (which scales the milestone too).
max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[5],
        gamma=0.1)
]
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
