# AdaMixer+LORS ResNeXt-101-DCN, 300 queries, 3x with multi-scale + crop:
# the AdaMixer config with the LORS decoder.
_base_ = [
    '../adamixer/adamixer_x101-dcn_300q_8xb2-crop-ms-480-800-3x_coco.py',
    '../_base_/lors_decoder.py'
]
model = dict(decoder={{_base_.lors_decoder}})
