import pytest
import torch
import torch.nn.functional as F

from lors_det.models.layers import (AdaptiveMixing, AdaptiveSampling,
                                    level_weights, make_sample_points, mix,
                                    position_embedding, refine_xyzr, sample_3d,
                                    xyxy_to_xyzr, xyzr_to_xyxy)


def test_xyzr_round_trip_and_refine():
    boxes = torch.tensor([[10., 20., 50., 40.], [0., 0., 8., 32.]])
    xyzr = xyxy_to_xyzr(boxes)
    torch.testing.assert_close(xyzr_to_xyxy(xyzr), boxes)
    # z = log2(sqrt(w h)), r = log2(h / w)
    torch.testing.assert_close(xyzr[1, 2:], torch.tensor([4.0, 2.0]))
    moved = refine_xyzr(xyzr, torch.tensor([[1., 0., 0., 0.]] * 2))
    torch.testing.assert_close(moved[:, 0] - xyzr[:, 0], 2**xyzr[:, 2])
    # every coordinate: x, y move by delta * 2**z, z and r by delta
    delta = torch.tensor([[0.5, -0.25, 0.125, -1.0]] * 2)
    scale = 2**xyzr[:, 2:3]
    want = torch.cat(
        [xyzr[:, :2] + delta[:, :2] * scale, xyzr[:, 2:] + delta[:, 2:]],
        dim=1)
    torch.testing.assert_close(refine_xyzr(xyzr, delta), want)


def test_position_embedding_shape_and_values():
    pe = position_embedding(torch.tensor([[[1000., 0., 0., 0.]]]), 8)
    assert pe.shape == (1, 1, 32)
    torch.testing.assert_close(pe[0, 0, 0], torch.sin(torch.tensor(1.)))
    torch.testing.assert_close(pe[0, 0, 1], torch.cos(torch.tensor(1.)))


def test_level_weights_peak_at_matching_stride():
    w = level_weights(torch.tensor([2.0, 5.0]), [4, 8, 16, 32])
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    assert w.argmax(-1).tolist() == [0, 3]


@pytest.mark.parametrize('H, W, stride', [(16, 16, 1), (12, 20, 2),
                                          (20, 12, 4)])
def test_sample_3d_reads_each_group_channels_at_the_point(H, W, stride):
    # one level: the feature value is its own x coordinate for group 0 and
    # its y coordinate for group 1; non-square maps tell x from y
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    feat = torch.stack([xs, ys]).float()[None]  # (1, 2, H, W), G=2, c=1
    z = float(torch.tensor(stride).log2())  # the level's own scale
    pts = torch.tensor([[[[3.5, 7.5, z], [10.5, 2.5, z]]]]) * torch.tensor(
        [stride, stride, 1.0])  # (1, 1, 2, 3), x and y in input pixels
    out = sample_3d(pts, [feat], [stride], num_groups=2)  # (1, 1, 2, 1, 1)
    assert out.shape == (1, 1, 2, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([3.0, 2.0]))


def test_sampling_grid_init_covers_the_box():
    sampling = AdaptiveSampling(content_dim=8, in_points=16, num_groups=2)
    xyzr = xyxy_to_xyzr(torch.tensor([[[0., 0., 64., 64.]]]))
    offset = sampling.sampling_offset_generator(torch.randn(1, 1, 8))
    pts = make_sample_points(offset, xyzr, 32)
    assert pts.shape == (1, 1, 32, 3)
    xs = pts[0, 0, :16, 0].unique()
    torch.testing.assert_close(xs, torch.tensor([8., 24., 40., 56.]))
    torch.testing.assert_close(pts[..., 2], torch.full((1, 1, 32), 5.0))


def test_mix_matches_reference_per_group():
    x, M, S = torch.randn(2, 3, 2, 6, 4), torch.randn(2, 3, 2, 4, 4), \
        torch.randn(2, 3, 2, 5, 6)
    out = mix(x.clone(), M, S)
    assert out.shape == (2, 3, 2, 5, 4)
    b, n, g = 1, 2, 1
    ref = F.relu(F.layer_norm(x[b, n, g] @ M[b, n, g], (6, 4)))
    ref = F.relu(F.layer_norm(S[b, n, g] @ ref, (5, 4)))
    torch.testing.assert_close(out[b, n, g], ref)


def randomise_lors(mixing):
    """Non-zero private parts (at init they are zero and LORS == shared)."""
    with torch.no_grad():
        for name, p in mixing.named_parameters():
            if 'private' in name or 'factors' in name:
                p.normal_(std=0.1)


def test_adaptive_mixing_lors_equals_plain_with_its_dense_weights():
    """LORS mixing == AdaMixer's plain mixing given LORS's per-stage dense
    weights (the private parts non-zero), for every stage: LORSA and LORST
    only re-parametrise the plain stacks."""
    torch.manual_seed(0)
    args = dict(
        content_dim=32,
        feat_channels=32,
        in_points=8,
        out_points=16,
        num_groups=2,
        num_stages=3)
    plain = AdaptiveMixing(**args).double()
    lors = AdaptiveMixing(
        **args, lorsa=dict(rank=4, num_factors=[1, 2, 3]),
        lorst=dict(rank=2)).double()
    randomise_lors(lors)
    with torch.no_grad():
        lors.generator.shared_generator.weight.normal_(std=0.1)
        for norm in lors.norms:
            norm.weight.normal_()
            norm.bias.normal_()
    plain.generator.load_state_dict(lors.generator.dense_state_dict())
    plain.out_proj.load_state_dict(lors.out_proj.dense_state_dict())
    plain.norms.load_state_dict(lors.norms.state_dict())
    x = torch.randn(2, 5, 2, 8, 16, dtype=torch.double)
    q = torch.randn(2, 5, 32, dtype=torch.double)
    outs = [lors(x, q, stage=i) for i in range(3)]
    for i, out in enumerate(outs):
        assert out.shape == (2, 5, 32)
        torch.testing.assert_close(out, plain(x, q, stage=i))
    assert not torch.allclose(outs[0], outs[2])  # the stages differ


def test_lors_mixing_stages_agree_at_init():
    lors = AdaptiveMixing(
        32,
        32,
        in_points=8,
        out_points=16,
        num_groups=2,
        num_stages=3,
        lorsa=dict(rank=4, num_factors=[1, 2, 3]),
        lorst=dict(rank=2))
    x, q = torch.randn(2, 5, 2, 8, 16), torch.randn(2, 5, 32)
    with torch.no_grad():
        lors.generator.shared_generator.weight.normal_(std=0.1)
    torch.testing.assert_close(lors(x, q, 0), lors(x, q, 2))
    randomise_lors(lors)
    assert not torch.allclose(lors(x, q, 0), lors(x, q, 2))


@pytest.mark.parametrize('kwargs, field', [
    (dict(in_points=0), 'in_points'),
    (dict(num_groups=-1), 'num_groups'),
    (dict(content_dim=2.5), 'content_dim'),
    (dict(in_points=True), 'in_points'),
])
def test_adaptive_sampling_bad_arguments_name_the_field(kwargs, field):
    args = dict(content_dim=8, in_points=4, num_groups=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        AdaptiveSampling(**args)


def test_sample_3d_refuses_groups_that_do_not_divide():
    feat = torch.randn(1, 6, 8, 8)
    with pytest.raises(ValueError, match='points'):
        sample_3d(torch.zeros(1, 1, 5, 3), [feat], [1], num_groups=2)
    with pytest.raises(ValueError, match='channels'):
        sample_3d(torch.zeros(1, 1, 8, 3), [feat], [1], num_groups=4)


def test_sample_3d_blends_the_levels_with_their_weights():
    """Each level is sampled at the point and weighted by
    ``level_weights(z)``: constant maps 1 (stride 1) and 3 (stride 2) give
    ``w_0 + 3 w_1`` inside the image."""
    feats = [torch.ones(1, 2, 16, 16), torch.full((1, 2, 8, 8), 3.0)]
    z = torch.tensor([0.3, 1.2])
    pts = torch.tensor([[[[6.0, 7.0, z[0]], [9.0, 5.0, z[1]]]]])  # G=1
    out = sample_3d(pts, feats, [1, 2], num_groups=1)  # (1, 1, 1, 2, 2)
    w = level_weights(z, [1, 2])  # (2, L)
    expected = (w[:, 0] + 3 * w[:, 1])[:, None].expand(2, 2)
    torch.testing.assert_close(out[0, 0, 0], expected)
