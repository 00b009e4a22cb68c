# Ablation (paper Table 5): private low-rank parts only, no shared weights.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(use_shared=False), lorst=dict(use_shared=False))))
