# The LORS mixing of the CPU-sized tiny configs (configs/synthetic,
# configs/proxy; C = 64), in one place: the paper's structure with the
# ranks scaled down, LORSA r=8 with K=[1,1,2,2,3,3] on the ACM/ASM generator
# and LORST r=4, K=1 on the output linear. The sampling stays the tiny
# AdaMixer's (2 groups x 16 points). A tiny config becomes AdaMixer+LORS with
#   _base_ = ['<tiny adamixer config>', '<this file>']
#   model = dict(decoder={{_base_.lors_decoder}})
lors_decoder = dict(
    mixing=dict(
        lorsa=dict(rank=8, num_factors=[1, 1, 2, 2, 3, 3]),
        lorst=dict(rank=4, num_factors=1)))
