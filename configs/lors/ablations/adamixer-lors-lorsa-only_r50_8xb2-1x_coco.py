# Ablation (paper Table 4): LORSA on the ACM/ASM generators only, with the
# paper's LORSA settings of the base; the output linear stays one dense
# linear per stage (LORST removed with _delete_).
_base_ = '../adamixer-lors_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        mixing=dict(
            _delete_=True, lorsa={{_base_.model.decoder.mixing.lorsa}})))
