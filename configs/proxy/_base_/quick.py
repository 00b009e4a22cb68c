# Overlay of tools/analysis/compare_param_efficiency.py --quick (merged over
# every configs/proxy config): a few tiny hard-preset images and one
# iteration, so the whole study runs in the test suite. Its APs mean
# nothing.
data_root = 'data/proxy_quick/'
synthetic_data = dict(
    preset='hard', num_train=4, num_val=4, img_size=64, seed=0)
img_scale = (64, 64)
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=img_scale, keep_ratio=True),
            dict(type='PackDetInputs')
        ]))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=img_scale, keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(
                type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                           'scale_factor'))
        ]))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
max_epochs = 1
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1)
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
