# Ablation (paper Table 8): 8 decoder stages (default 6); LORSA K per
# stage [1, 1, 2, 2, 3, 3, 4, 4].
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        num_stages=8,
        mixing=dict(lorsa=dict(num_factors=[1, 1, 2, 2, 3, 3, 4, 4]))))
