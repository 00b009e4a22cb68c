# DINO-4scale + LORS sized for CPU tests on the synthetic shapes (64 px):
# ResNet-18 from scratch, 1 encoder and 2 decoder layers with FFN width 64,
# 10 queries and 10 denoising queries; LORST r = 4, K = [1, 2]. The width
# stays DINO's 256: its decoder embeds the 4 reference-box coordinates with
# a fixed 128 sine features each (coordinate_to_encoding's default).
_base_ = [
    '../dino-4scale-lors_r50_8xb2-12e_coco.py', '../_base_/synthetic_data.py'
]
ffn = dict(feedforward_channels=64)
model = dict(
    detector=dict(
        num_queries=10,
        backbone=dict(
            depth=18,
            frozen_stages=-1,
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=False,
            init_cfg=None),
        neck=dict(in_channels=[128, 256, 512]),
        encoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=ffn)),
        decoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=ffn)),
        bbox_head=dict(num_classes=3),
        dn_cfg=dict(group_cfg=dict(num_dn_queries=10)),
        test_cfg=dict(max_per_img=10)),
    share=[
        dict(
            stack='decoder.layers',
            lorst=dict(
                targets=['cross_attn.*', 'ffn.layers.*'],
                rank=4,
                num_factors=[1, 2]))
    ])

train_dataloader = {{_base_.synthetic_train_dataloader}}
val_dataloader = {{_base_.synthetic_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.synthetic_val_evaluator}}
test_evaluator = val_evaluator
