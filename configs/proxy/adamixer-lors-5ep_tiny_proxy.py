# The from-scratch control of docs/from_dense.md: AdaMixer+LORS trained from
# scratch for as many iterations as the dense training (4 epochs) plus the
# fine-tune after conversion (1 epoch) together: 5 epochs, the proxy
# schedule's shape (warm-up, x0.1 for the last epoch).
_base_ = './adamixer-lors_tiny_proxy.py'
max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    _base_.param_scheduler[0],  # the warm-up
    dict(
        _base_.param_scheduler[1], end=max_epochs, milestones=[max_epochs - 1])
]
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
