# AdaMixer (CVPR 2022) with ResNet-50: model only. The query count is ONE
# field, model.query_generator.num_queries (test max_per_img follows it).
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)

num_stages = 6
model = dict(
    type='AdaMixer',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='ChannelMapping',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256),
    query_generator=dict(
        type='InitialQueryGenerator', num_queries=100, content_dim=256),
    decoder=dict(
        type='AdaMixerDecoder',
        num_classes=80,
        num_stages=num_stages,  # stage_loss_weights default: 1.0 per stage
        featmap_strides=[4, 8, 16, 32],
        content_dim=256,
        num_groups=4,  # G
        in_points=32,  # P_in
        out_points=128,  # P_out
        stage=dict(
            num_heads=8,
            feedforward_channels=2048,
            num_cls_fcs=1,
            num_reg_fcs=1),
        mixing=dict(),  # plain AdaMixer mixing (LORS configs add lorsa/lorst)
        # losses (focal 2.0, L1 5.0, GIoU 2.0) are AdaMixerDecoder's
        # defaults, set once there; override them here (loss_cls=...)
    ),
    # assigner: AdaMixerDecoder's default Hungarian matching with the same
    # cost weights; override with train_cfg=dict(assigner=...)
    train_cfg=dict(),
    test_cfg=dict())
