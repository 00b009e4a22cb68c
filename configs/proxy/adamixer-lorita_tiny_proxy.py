# LoRITa on the hard synthetic preset: FFN and mixing output linears trained
# as products of 3 linear maps (the study also evaluates them compressed).
_base_ = './adamixer_tiny_proxy.py'
model = dict(
    decoder=dict(
        stage=dict(ffn=dict(lorita=dict(num_factors=3))),
        mixing=dict(out_proj_lorita=dict(num_factors=3))))
