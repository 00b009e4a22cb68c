# AdaMixer+LORS on the hard synthetic preset: the proxy AdaMixer with the
# LORS mixing of configs/synthetic (LORSA r=8, K=[1,1,2,2,3,3]; LORST r=4,
# ranks scaled to C = 64).
_base_ = './adamixer_tiny_proxy.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(rank=8, num_factors=[1, 1, 2, 2, 3, 3]),
            lorst=dict(rank=4, num_factors=1))))
