# Sparse R-CNN + LORS sized for CPU tests on the synthetic shapes (64 px):
# ResNet-18 from scratch, C = 32, dynamic-conv channels 8, 2 stages, 10
# proposals; LORSA r = 4, K = [1, 2], LORST r = 4.
_base_ = [
    '../sparse-rcnn-lors_r50_fpn_1x_coco.py', '../_base_/synthetic_data.py'
]
num_stages = 2
num_proposals = 10
content_dim = 32
dynamic_channels = 8

# mmengine cannot merge into list items: the stage is written out, with the
# base's losses and box coder
stage = dict(
    type='DIIHead',
    num_classes=3,
    num_heads=4,
    feedforward_channels=64,
    in_channels=content_dim,
    dynamic_conv_cfg=dict(
        type='DynamicConv',
        in_channels=content_dim,
        feat_channels=dynamic_channels,
        out_channels=content_dim,
        input_feat_shape=7,
        act_cfg=dict(type='ReLU', inplace=True),
        norm_cfg=dict(type='LN')),
    loss_bbox=dict(type='L1Loss', loss_weight=5.0),
    loss_iou=dict(type='GIoULoss', loss_weight=2.0),
    loss_cls=dict(
        type='FocalLoss',
        use_sigmoid=True,
        gamma=2.0,
        alpha=0.25,
        loss_weight=2.0),
    bbox_coder=dict(
        type='DeltaXYWHBBoxCoder',
        clip_border=False,
        target_means=[0., 0., 0., 0.],
        target_stds=[0.5, 0.5, 1., 1.]))
model = dict(
    detector=dict(
        backbone=dict(
            depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
        neck=dict(in_channels=[64, 128, 256, 512], out_channels=content_dim),
        rpn_head=dict(
            num_proposals=num_proposals, proposal_feature_channel=content_dim),
        roi_head=dict(
            num_stages=num_stages,
            stage_loss_weights=[1] * num_stages,
            proposal_feature_channel=content_dim,
            bbox_roi_extractor=dict(out_channels=content_dim),
            bbox_head=[stage] * num_stages),
        test_cfg=dict(rcnn=dict(max_per_img=num_proposals))),
    share=[
        dict(
            stack='roi_head.bbox_head',
            lorsa=dict(
                targets=['instance_interactive_conv.dynamic_layer'],
                matrix_shapes=[(content_dim, dynamic_channels),
                               (dynamic_channels, content_dim)],
                rank=4,
                num_factors=[1, 2]),
            lorst=dict(
                targets=['instance_interactive_conv.fc_layer', 'ffn.layers.*'],
                rank=4,
                num_factors=1))
    ])

train_dataloader = {{_base_.synthetic_train_dataloader}}
val_dataloader = {{_base_.synthetic_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.synthetic_val_evaluator}}
test_evaluator = val_evaluator
