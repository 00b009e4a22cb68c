# AdaMixer+LORS R50 1x with tied FFNs: LORS on the mixing, W/W^T on the FFN.
_base_ = '../lors/adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(stage=dict(ffn=dict(tied=True))))
