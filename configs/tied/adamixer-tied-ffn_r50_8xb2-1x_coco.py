# AdaMixer R50 1x (2 groups x 64 points) with tied FFNs (Koyun & Toreyin):
# FFN(x) = W^T relu(W x + b1) + b2, half the FFN weights in every stage.
_base_ = '../adamixer/adamixer-2x64_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(stage=dict(ffn=dict(tied=True))))
