# AdaMixer+LORS on the hard synthetic preset: the proxy AdaMixer with the
# tiny LORS mixing of configs/synthetic (LORSA r=8, K=[1,1,2,2,3,3]; LORST
# r=4, ranks scaled to C = 64).
_base_ = ['./adamixer_tiny_proxy.py', '../_base_/lors_decoder_tiny.py']
model = dict(decoder={{_base_.lors_decoder}})
