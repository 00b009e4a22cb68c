# AdaMixer R50, 100 queries, 4 groups x 32 points, 1x (12 epochs).
# Published COCO val AP 42.7.
_base_ = [
    '../_base_/models/adamixer_r50.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
# AdaMixer's optimiser: AdamW lr 2.5e-5, wd 1e-4, grad-norm clip 1.0 for a
# total batch of 16 (8 GPUs x 2 images); schedule_1x gives the 500-iteration
# linear warm-up and the x0.1 steps at epochs 8 and 11.
optim_wrapper = dict(
    # stops with the loss name and iteration on NaN/inf (docs/reliability.md)
    type='NonFiniteCheckOptimWrapper',
    # names a wrong optimizer.lr before torch builds the optimizer
    constructor='CheckedOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=2.5e-5, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2))
auto_scale_lr = dict(base_batch_size=16)

# annotation files checked before training (clear errors, degenerate boxes
# dropped with a warning); checkpoints written atomically
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
