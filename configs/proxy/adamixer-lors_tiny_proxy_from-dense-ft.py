# Short fine-tune of a LORS model converted from a trained dense AdaMixer
# (tools/model_converters/dense_to_lors.py, docs/from_dense.md): the proxy
# LORS model, started from the converted checkpoint, for a quarter of the
# from-scratch schedule (1 epoch of 122 iterations instead of 4) at half its
# lr, with a short warm-up and x0.1 for the last quarter (the shape of the
# from-scratch schedule). Not tuned: the one setting the evidence used.
#   python tools/train.py \
#       configs/proxy/adamixer-lors_tiny_proxy_from-dense-ft.py \
#       --cfg-options load_from=CONVERTED.pth
_base_ = './adamixer-lors_tiny_proxy.py'

load_from = None  # the converted checkpoint: set it (--cfg-options load_from=)
max_epochs = 1
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2.5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=122,
        milestones=[92],
        gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
