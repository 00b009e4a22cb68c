# AdaMixer R50 1x (2 groups x 64 points) trained with LoRITa
# (arXiv 2405.03089): the FFN linears and each stage's mixing output linear
# are products of 3 linear maps; compress after training with
# tools/model_converters/lorita_compress.py.
_base_ = '../adamixer/adamixer-2x64_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        stage=dict(ffn=dict(lorita=dict(num_factors=3))),
        mixing=dict(out_proj_lorita=dict(num_factors=3))))
