# Ablation (paper Table 7): LORST rank r=4 (default 8).
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(mixing=dict(lorst=dict(rank=4))))
