# AdaMixer R101, 300 queries, 3x with multi-scale + crop. Published AP 48.0.
_base_ = './adamixer_r50_300q_8xb2-crop-ms-480-800-3x_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
