# AdaMixer R50 1x with 2 sampling groups x 64 points: the fair no-LORS
# baseline of the LORS paper (same sampling as AdaMixer+LORS).
_base_ = './adamixer_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(num_groups=2, in_points=64))
