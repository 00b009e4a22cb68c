import torch

from lors_det.models import InitialQueryGenerator
from lors_det.models.layers import xyzr_to_xyxy


def test_defaults_and_whole_image_init():
    gen = InitialQueryGenerator()
    assert (gen.num_queries, gen.content_dim) == (100, 256)
    expected = torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(100, 4)
    assert torch.equal(gen.init_proposal_bboxes.weight, expected)
    assert not gen.init_proposal_bboxes.weight.requires_grad


def test_relative_boxes_become_pixel_xyzr_per_image():
    gen = InitialQueryGenerator(num_queries=2, content_dim=8)
    with torch.no_grad():  # (cx, cy, w, h) relative to the image
        gen.init_proposal_bboxes.weight.copy_(
            torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.5, 0.25]]))
    metas = [dict(img_shape=(40, 80)), dict(img_shape=(64, 32))]  # (h, w)
    xyzr, content = gen(metas)
    assert xyzr.shape == (2, 2, 4) and content.shape == (2, 2, 8)
    expected = torch.tensor([[[0., 0., 80., 40.], [0., 15., 40., 25.]],
                             [[0., 0., 32., 64.], [0., 24., 16., 40.]]])
    torch.testing.assert_close(xyzr_to_xyxy(xyzr), expected)
    assert not xyzr.requires_grad  # boxes enter the decoder detached
    # content: the same layer-normalised embeddings for every image
    torch.testing.assert_close(content[0], content[1])
    torch.testing.assert_close(
        content.mean(-1), torch.zeros(2, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        content.var(-1, unbiased=False), torch.ones(2, 2), atol=1e-4, rtol=0)
    assert content.requires_grad
