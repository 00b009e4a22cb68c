# Ablation (paper Table 6): LORSA rank r=32 (default 16).
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(mixing=dict(lorsa=dict(rank=32))))
