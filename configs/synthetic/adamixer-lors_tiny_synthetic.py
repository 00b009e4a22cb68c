# AdaMixer+LORS on the synthetic data: the tiny AdaMixer config with a LORS
# mixing (LORSA r=8, K=[1,1,2,2,3,3]; LORST r=4), ranks scaled to C = 64.
_base_ = './adamixer_tiny_synthetic.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(rank=8, num_factors=[1, 1, 2, 2, 3, 3]),
            lorst=dict(rank=4, num_factors=1))))
