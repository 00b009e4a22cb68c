# LoRITa (arXiv 2405.03089) on the synthetic data: FFN and mixing output
# linears as products of 3 linear maps.
_base_ = './adamixer_tiny_synthetic.py'
model = dict(
    decoder=dict(
        stage=dict(ffn=dict(lorita=dict(num_factors=3))),
        mixing=dict(out_proj_lorita=dict(num_factors=3))))
