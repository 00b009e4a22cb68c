# AdaMixer ResNeXt-101 (32x4d) with deformable convolutions in stages 2-4,
# 300 queries, 3x with multi-scale + crop: the official model zoo's
# strongest CNN model (adamixer_dx101_300_query_crop_mstrain_480-800_3x).
# Published AP 49.5. The deformable convolution is mmcv's DCN (v1, one
# offset group), as in the official config.
_base_ = './adamixer_r50_300q_8xb2-crop-ms-480-800-3x_coco.py'
model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=32,
        base_width=4,
        dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True),
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnext101_32x4d')))
