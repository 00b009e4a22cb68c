# AdaMixer R50, 300 queries, 3x (36 epochs, lr x0.1 at epochs 24 and 33)
# with DETR-style multi-scale + random-crop augmentation. Published AP 47.0.
_base_ = './adamixer_r50_8xb2-crop-ms-480-800-3x_coco.py'
model = dict(query_generator=dict(num_queries=300))
