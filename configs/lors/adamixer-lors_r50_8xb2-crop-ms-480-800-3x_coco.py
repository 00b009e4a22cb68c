# AdaMixer+LORS R50, 100 queries, 3x with multi-scale + crop: the AdaMixer
# config with the LORS decoder.
_base_ = [
    '../adamixer/adamixer_r50_8xb2-crop-ms-480-800-3x_coco.py',
    '../_base_/lors_decoder.py'
]
model = dict(decoder={{_base_.lors_decoder}})
