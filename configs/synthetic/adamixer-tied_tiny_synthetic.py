# Tied W / W^T FFNs (Koyun & Toreyin, "Do deep neural networks utilize the
# weight space efficiently?") on the synthetic data.
_base_ = './adamixer_tiny_synthetic.py'
model = dict(decoder=dict(stage=dict(ffn=dict(tied=True))))
