# AdaMixer (the fair baseline of the proxy study: 2 groups x 16 points, the
# sampling of the LORS configs here) on the hard synthetic preset
# (tools/misc/make_synthetic_coco.py --preset hard: 9 colour x shape
# classes, 8-96 px objects on 256 px images, occlusion, clutter). The model
# is the CPU-sized tiny one of configs/synthetic (ResNet-18 from scratch,
# C = 64) at half the backbone width (base_channels 32: at 256 px the
# full-width backbone took ~2/3 of a training step) with 32 queries;
# tools/analysis/compare_param_efficiency.py trains every configs/proxy
# config with this schedule over several seeds.
_base_ = '../synthetic/adamixer_tiny_synthetic.py'

data_root = 'data/proxy_hard/'
# make_synthetic_coco's arguments; the study tool writes the data into
# data_root with them if it is missing
synthetic_data = dict(
    preset='hard', num_train=512, num_val=256, img_size=256, seed=0)
metainfo = dict(
    classes=('red_circle', 'red_square', 'red_triangle', 'green_circle',
             'green_square', 'green_triangle', 'blue_circle', 'blue_square',
             'blue_triangle'))
img_scale = (256, 256)

model = dict(
    backbone=dict(base_channels=32),
    neck=dict(in_channels=[32, 64, 128, 256]),
    query_generator=dict(num_queries=32),
    decoder=dict(num_classes=len(metainfo['classes'])))

# the base's synthetic pipelines at img_scale (Resize is their only
# size-dependent step); their one augmentation, a horizontal flip, keeps
# colour and shape, so it cannot change a class here
train_pipeline = [
    dict(step, scale=img_scale) if step.type == 'Resize' else step
    for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=img_scale) if step.type == 'Resize' else step
    for step in _base_.test_pipeline
]
train_dataloader = dict(
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# The study's schedule, the same for every configs/proxy config: 4 epochs
# of the 512 training images (122 iterations of 4 images; training skips the
# few empty images), AdamW lr 5e-4 (the tiny synthetic recipe), 100-iteration
# linear warm-up, x0.1 for the last epoch; evaluated once, after training.
# Sized so that the study's 18 trainings (6 configs x 3 seeds, 2 at a time)
# fit 100 min on an idle 2-core machine: one iteration takes ~1.0 s of CPU
# (one thread; measured as CPU time on a shared machine), docs/
# param_efficiency.md has the measured wall times.
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[max_epochs - 1],
        gamma=0.1)
]
randomness = dict(seed=0)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
