# AdaMixer+LORS on the synthetic data: the tiny AdaMixer config with the
# tiny LORS mixing (LORSA r=8, K=[1,1,2,2,3,3]; LORST r=4), ranks scaled to
# C = 64.
_base_ = ['./adamixer_tiny_synthetic.py', '../_base_/lors_decoder_tiny.py']
model = dict(decoder={{_base_.lors_decoder}})
