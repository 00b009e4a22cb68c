# AdaMixer+LORS r50, 300 queries, 3x with multi-scale + crop: the AdaMixer
# config with the LORS decoder.
# 300 queries really reach the model (the official LORS config set a
# top-level num_query that never did).
_base_ = [
    '../adamixer/adamixer_r50_300q_8xb2-crop-ms-480-800-3x_coco.py',
    '../_base_/lors_decoder.py'
]
model = dict(decoder={{_base_.lors_decoder}})
