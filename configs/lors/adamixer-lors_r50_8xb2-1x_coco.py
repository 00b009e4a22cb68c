# AdaMixer+LORS R50, 100 queries, 1x. Same sampling as the 2x64 baseline;
# the mixing's ACM/ASM generator is LORSA (r=16, K=[1,1,2,2,3,3]) and its
# output linear LORST (r=8, K=1), shared by all 6 stages.
_base_ = '../adamixer/adamixer-2x64_r50_8xb2-1x_coco.py'
model = dict(
    decoder=dict(
        mixing=dict(
            lorsa=dict(rank=16, num_factors=[1, 1, 2, 2, 3, 3]),
            lorst=dict(rank=8, num_factors=1))))
