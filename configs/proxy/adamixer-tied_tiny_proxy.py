# Tied FFNs (W^T F(W x + b1) + b2) on the hard synthetic preset.
_base_ = './adamixer_tiny_proxy.py'
model = dict(decoder=dict(stage=dict(ffn=dict(tied=True))))
