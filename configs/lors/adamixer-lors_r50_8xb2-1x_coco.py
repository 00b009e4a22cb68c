# AdaMixer+LORS R50, 100 queries, 1x: the AdaMixer R50 1x config with the
# LORS decoder (same sampling as the 2x64 baseline).
_base_ = [
    '../adamixer/adamixer_r50_8xb2-1x_coco.py', '../_base_/lors_decoder.py'
]
model = dict(decoder={{_base_.lors_decoder}})
