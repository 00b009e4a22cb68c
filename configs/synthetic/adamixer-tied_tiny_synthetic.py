# Tied FFNs (seed 003) on the synthetic data.
_base_ = './adamixer_tiny_synthetic.py'
model = dict(decoder=dict(stage=dict(ffn=dict(tied=True))))
