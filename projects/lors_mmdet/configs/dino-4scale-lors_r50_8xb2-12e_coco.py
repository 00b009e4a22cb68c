# DINO-4scale R50 12e (mmdet's recipe, unchanged) with the linears of its 6
# decoder layers shared by LORST (rank 8, K = 1; lors_det.models.LORSWrapper):
# the deformable cross-attention's value/output projections, sampling
# offsets and attention weights, and the two FFN linears. The self-attention
# (nn.MultiheadAttention reads its weights directly), the norms and the
# prediction branches stay per layer.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['lors_det'], allow_failed_imports=False)

lors_share = dict(
    stack='decoder.layers',
    lorst=dict(
        targets=['cross_attn.*', 'ffn.layers.*'], rank=8, num_factors=1))
model = dict(
    _delete_=True,
    type='LORSWrapper',
    detector={{_base_.model}},
    share=[lors_share])
