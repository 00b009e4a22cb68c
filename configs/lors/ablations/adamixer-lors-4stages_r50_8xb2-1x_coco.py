# Ablation (paper Table 8): 4 decoder stages (default 6); LORSA K per
# stage [1, 1, 2, 2].
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        num_stages=4, mixing=dict(lorsa=dict(num_factors=[1, 1, 2, 2]))))
