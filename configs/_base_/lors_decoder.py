# The LORS decoder settings of the paper, in one place. A config turns an
# AdaMixer config into AdaMixer+LORS with
#   _base_ = ['<adamixer config>', '<this file>']
#   model = dict(decoder={{_base_.lors_decoder}})
# 2 sampling groups x 64 points; the ACM/ASM generator is LORSA (r=16,
# K=[1,1,2,2,3,3] over the 6 stages) and the mixing output linear LORST
# (r=8, K=1), both shared by all stages.
lors_decoder = dict(
    num_groups=2,
    in_points=64,
    mixing=dict(
        lorsa=dict(rank=16, num_factors=[1, 1, 2, 2, 3, 3]),
        lorst=dict(rank=8, num_factors=1)))
