# Ablation: LORS private low-rank parts only, no shared weights.
_base_ = './adamixer-lors_tiny_proxy.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(use_shared=False), lorst=dict(use_shared=False))))
