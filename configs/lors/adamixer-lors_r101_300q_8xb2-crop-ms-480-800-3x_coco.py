# AdaMixer+LORS r101, 300 queries, 3x with multi-scale + crop: the AdaMixer
# r101 config with the LORS decoder (2 groups x 64 points, LORSA + LORST).
_base_ = '../adamixer/adamixer_r101_300q_8xb2-crop-ms-480-800-3x_coco.py'
model = dict(
    decoder=dict(
        num_groups=2,
        in_points=64,
        mixing=dict(
            lorsa=dict(rank=16, num_factors=[1, 1, 2, 2, 3, 3]),
            lorst=dict(rank=8, num_factors=1))))
