# Sparse R-CNN R50 1x (mmdet's recipe, unchanged) with its 6 DIIHead stages
# shared by LORS (lors_det.models.LORSWrapper):
# * LORSA on each DynamicConv's parameter generator (C -> C*c + c*C, read as
#   one (C, c) and one (c, C) matrix per proposal): one shared generator,
#   per-stage rank-16 residuals with K = [1, 1, 2, 2, 3, 3] as in the paper;
# * LORST (rank 8, K = 1) on the DynamicConv output projection (C*7*7 -> C)
#   and the two FFN linears.
# Attention (nn.MultiheadAttention reads its weights directly) and the
# cls/reg branches stay per stage.
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)

content_dim = 256  # DIIHead in_channels
dynamic_channels = 64  # DynamicConv feat_channels
lors_share = dict(
    stack='roi_head.bbox_head',
    lorsa=dict(
        targets=['instance_interactive_conv.dynamic_layer'],
        matrix_shapes=[(content_dim, dynamic_channels),
                       (dynamic_channels, content_dim)],
        rank=16,
        num_factors=[1, 1, 2, 2, 3, 3]),
    lorst=dict(
        targets=['instance_interactive_conv.fc_layer', 'ffn.layers.*'],
        rank=8,
        num_factors=1))
model = dict(
    _delete_=True,
    type='LORSWrapper',
    detector={{_base_.model}},
    share=[lors_share])
