# Ablation (paper Table 5): shared parts only, no private low-rank terms:
# all stages use the same mixing weights (each keeps its bias and norm).
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(use_private=False), lorst=dict(use_private=False))))
