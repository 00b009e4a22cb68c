# AdaMixer+LORS R50, 100 queries, 3x with multi-scale + crop.
_base_ = './adamixer-lors_r50_300q_8xb2-crop-ms-480-800-3x_coco.py'
model = dict(query_generator=dict(num_queries=100))
