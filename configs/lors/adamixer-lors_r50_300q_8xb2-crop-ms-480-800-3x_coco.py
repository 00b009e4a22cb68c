# AdaMixer+LORS R50, 300 queries (really 300: the official config's
# top-level num_query never reached the model), 3x with multi-scale + crop:
# the AdaMixer config with the LORS decoder.
_base_ = '../adamixer/adamixer_r50_300q_8xb2-crop-ms-480-800-3x_coco.py'
model = dict(
    decoder=dict(
        num_groups=2,
        in_points=64,
        mixing=dict(
            lorsa=dict(rank=16, num_factors=[1, 1, 2, 2, 3, 3]),
            lorst=dict(rank=8, num_factors=1))))
