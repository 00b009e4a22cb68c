# Ablation (paper Table 6): LORSA with K=1 low-rank terms in every stage
# (default K=[1, 1, 2, 2, 3, 3]).
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(mixing=dict(lorsa=dict(num_factors=[1] * 6))))
