# Ablation (paper Table 4): LORSA on the ACM/ASM generators only; the
# output linear stays one dense linear per stage.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        mixing=dict(
            _delete_=True,
            lorsa=dict(rank=16, num_factors=[1, 1, 2, 2, 3, 3]))))
