# Ablation: LORS shared parts only, no private low-rank terms (all stages
# mix with the same weights; each keeps its bias and norm).
_base_ = './adamixer-lors_tiny_proxy.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(use_private=False), lorst=dict(use_private=False))))
