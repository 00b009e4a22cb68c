# Ablation (paper Table 4): LORST on the output linear only; the ACM/ASM
# generators stay one dense generator per stage.
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(decoder=dict(mixing=dict(_delete_=True, lorst=dict(rank=8))))
