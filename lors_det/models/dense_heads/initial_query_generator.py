"""AdaMixer's initial queries: one box and one content vector per query.

Modified from the official ``InitialQueryGenerator``
(https://github.com/MCG-NJU/AdaMixer), re-written for mmdet 3.x.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS

from ...lors.checks import check_positive
from ..layers import xyxy_to_xyzr


@MODELS.register_module()
class InitialQueryGenerator(nn.Module):
    """Initial xyzr boxes and content vectors of ``num_queries`` queries.

    Args:
        num_queries (int): N, the number of queries (100 or 300).
        content_dim (int): C.

    Every box starts as the whole image (cx, cy, w, h = 0.5, 0.5, 1, 1,
    relative). As in the official code the boxes enter the decoder detached,
    so ``init_proposal_bboxes`` never receives a gradient; it is kept as a
    frozen parameter (``requires_grad=False``) so checkpoints and parameter
    counts match the official ones. The content is layer-normalised
    (no affine) learned embeddings.
    """

    def __init__(self, num_queries: int = 100, content_dim: int = 256):
        super().__init__()
        check_positive('query_generator.num_queries', num_queries)
        check_positive('query_generator.content_dim', content_dim)
        self.num_queries = num_queries
        self.content_dim = content_dim
        self.init_proposal_bboxes = nn.Embedding(num_queries, 4)
        self.init_content_features = nn.Embedding(num_queries, content_dim)
        self.init_proposal_bboxes.weight.requires_grad_(False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.constant_(self.init_proposal_bboxes.weight[:, :2], 0.5)
        nn.init.constant_(self.init_proposal_bboxes.weight[:, 2:], 1.0)

    def forward(
            self,
            batch_img_metas: List[dict]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Queries for a batch.

        Args:
            batch_img_metas (list[dict]): with ``img_shape`` (h, w).

        Returns:
            tuple: xyzr (B, N, 4) in pixels of each image, content (B, N, C).
        """
        img_sizes = self.init_proposal_bboxes.weight.new_tensor(
            [m['img_shape'][:2] for m in batch_img_metas])  # (B, 2) h, w
        return self.from_sizes(img_sizes)

    def from_sizes(
            self,
            img_sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Queries from the valid image sizes as a tensor, so that an
        exported graph takes them as an input instead of baking them in.

        Args:
            img_sizes (Tensor): (B, 2) valid (h, w) of each image, pixels.

        Returns:
            tuple: xyzr (B, N, 4) in pixels of each image, content (B, N, C).
        """
        cxcywh = self.init_proposal_bboxes.weight  # (N, 4), relative
        xyxy = torch.cat([
            cxcywh[:, :2] - 0.5 * cxcywh[:, 2:],
            cxcywh[:, :2] + 0.5 * cxcywh[:, 2:]
        ],
                         dim=-1)
        img_sizes = img_sizes.to(cxcywh.dtype)
        whwh = img_sizes[:, [1, 0, 1, 0]]  # (B, 4)
        xyzr = xyxy_to_xyzr(xyxy[None] * whwh[:, None]).detach()
        content = self.init_content_features.weight
        content = torch.layer_norm(content, content.shape[-1:])
        content = content[None].expand(img_sizes.shape[0], -1, -1)
        return xyzr, content
