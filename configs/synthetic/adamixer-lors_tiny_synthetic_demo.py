# The run of tools/demo.py (`make demo`): AdaMixer+LORS tiny on a synthetic
# split of 1024 train / 64 val images of 128 px, which the demo writes into
# `data_root` with lors_det.datasets.make_synthetic_coco(data_root,
# **synthetic_data) before training. The schedule (6 epochs of 231
# iterations of 4 images, as training skips the empty images; x0.1 lr for
# the last epoch; validation every epoch) is the one
# adamixer_tiny_synthetic.py sizes for this split; only the final
# checkpoint is kept.
_base_ = './adamixer-lors_tiny_synthetic.py'

data_root = 'data/synthetic_demo/'
# make_synthetic_coco's arguments (its other arguments keep their defaults)
synthetic_data = dict(num_train=1024, num_val=64, img_size=128, seed=0)

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
randomness = dict(seed=0)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
