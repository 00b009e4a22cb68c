# Modified from MCG-NJU/AdaMixer, bbox_heads/sampling_3d_operator.py
"""AdaMixer's adaptive 3D feature sampling.

Each query generates, per sampling group g and point p, an offset
(dx, dy, dz) relative to its box: ``x = cx + dx * w``, ``y = cy + dy * h``,
``z = z_box + dz`` (z is log2 of the box scale). Features are sampled
bilinearly on every pyramid level and blended over levels with weights
``softmax_l(-(z - log2(stride_l))**2 / tau)``, tau = 2. Group g reads only its
own channel slice ``[g*c, (g+1)*c)`` of the C feature channels (c = C / G).
"""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.onnx.operators import shape_as_tensor

from ...lors.checks import check_divides, check_positive
from .xyzr import xyzr_to_xyxy


def make_sample_points(offset: torch.Tensor, xyzr: torch.Tensor,
                       num_points: int) -> torch.Tensor:
    """Absolute 3D sampling points from offsets.

    Args:
        offset (Tensor): (B, N, G*P*3) generated offsets, in box units.
        xyzr (Tensor): (B, N, 4) query boxes.
        num_points (int): G*P, points of all groups.

    Returns:
        Tensor: (B, N, G*P, 3) points (x, y in pixels; z in log2 scale).
    """
    B, N, _ = offset.shape
    offset = offset.view(B, N, num_points, 3)
    xyxy = xyzr_to_xyxy(xyzr)
    wh = (xyxy[..., 2:4] - xyxy[..., 0:2]).view(B, N, 1, 2)
    xy = xyzr[..., None, 0:2] + offset[..., 0:2] * wh
    z = xyzr[..., None, 2:3] + offset[..., 2:3]
    return torch.cat([xy, z], dim=-1)


def level_weights(z: torch.Tensor,
                  strides: Sequence[int],
                  tau: float = 2.0) -> torch.Tensor:
    """Gaussian weights over levels: (...,) z -> (..., L), sum to 1."""
    level_z = z.new_tensor(strides).log2()
    return torch.softmax(-(z[..., None] - level_z).pow(2) / tau, dim=-1)


def _relative_xy(xy: torch.Tensor, feat: torch.Tensor,
                 stride: int) -> torch.Tensor:
    """Pixel positions ``xy`` (..., 2) as fractions of the input size that
    the map ``feat`` (B, C, H, W) covers, (W * stride, H * stride).

    A traced export (ONNX) reads H and W from the tensor, so the graph
    keeps them symbolic instead of baking in the traced sizes; eager and
    ``torch.compile`` divide by the Python sizes (dynamo in torch 2.1 cannot
    trace ``shape_as_tensor``).
    """
    if torch.jit.is_tracing():
        hw = shape_as_tensor(feat)[-2:].to(xy.dtype)
        return xy / (torch.stack([hw[1], hw[0]]) * stride)
    H, W = feat.shape[-2:]
    return torch.stack([xy[..., 0] / (W * stride), xy[..., 1] / (H * stride)],
                       dim=-1)


def sample_3d(points: torch.Tensor, features: Sequence[torch.Tensor],
              strides: Sequence[int], num_groups: int) -> torch.Tensor:
    """Sample grouped features at 3D points.

    Args:
        points (Tensor): (B, N, G*P, 3) from :func:`make_sample_points`.
        features (list[Tensor]): L maps (B, C, H_l, W_l).
        strides (list[int]): stride of each map.
        num_groups (int): G.

    Returns:
        Tensor: (B, N, G, P, C // G) sampled features.
    """
    B, N, GP, _ = points.shape
    C = features[0].size(1)
    G = num_groups
    check_divides('sample_3d: num_groups', G, 'the number of points', GP)
    check_divides('sample_3d: num_groups', G, 'the feature channels', C)
    P, c = GP // G, C // G
    weights = level_weights(points[..., 2], strides)  # (B, N, G*P, L)
    # (B*G, N, P, ·): grid_sample treats each group as its own image
    xy = points[..., :2].view(B, N, G, P, 2).transpose(1, 2).flatten(0, 1)
    weights = weights.view(B, N, G, P, -1).transpose(1, 2).flatten(0, 1)
    out = None
    for level, (feat, stride) in enumerate(zip(features, strides)):
        H, W = feat.shape[-2:]
        grid = _relative_xy(xy, feat, stride) * 2.0 - 1.0  # in [-1, 1]
        sampled = F.grid_sample(
            feat.reshape(B * G, c, H, W),
            grid,
            mode='bilinear',
            padding_mode='zeros',
            align_corners=False)  # (B*G, c, N, P)
        sampled = sampled * weights[:, None, :, :, level]
        # no zeros to start from: an exported graph would give them the
        # traced batch size
        out = sampled if out is None else out + sampled
    # (B*G, c, N, P) -> (B, N, G, P, c)
    return out.view(B, G, c, N, P).permute(0, 3, 1, 4, 2)


class AdaptiveSampling(nn.Module):
    """Generates a query's 3D sampling points and samples the features.

    Args:
        content_dim (int): C, query size.
        in_points (int): P_in, points per group.
        num_groups (int): G.

    The offset generator ``Linear(C, G*P_in*3)`` starts with zero weight and
    a bias that places the points on a regular sqrt(P)xsqrt(P) grid over the
    box when P_in is a perfect square (else uniform in [-0.5, 0.5]), with
    dz = -1 (official init; :meth:`init_weights`, run at construction).
    """

    def __init__(self,
                 content_dim: int = 256,
                 in_points: int = 32,
                 num_groups: int = 4):
        super().__init__()
        check_positive('content_dim', content_dim)
        self.in_points = check_positive('in_points', in_points)
        self.num_groups = check_positive('num_groups', num_groups)
        self.sampling_offset_generator = nn.Linear(content_dim,
                                                   num_groups * in_points * 3)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.zeros_(self.sampling_offset_generator.weight)
        bias = self.sampling_offset_generator.bias.view(
            self.num_groups, self.in_points, 3)
        side = int(self.in_points**0.5)
        if side * side == self.in_points:
            axis = torch.linspace(-0.5, 0.5, side + 1)[:-1] + 0.5 / side
            # the official code puts the row coordinate first; kept so the
            # point order (and converted checkpoints) match
            rows = axis.view(-1, 1).repeat(1, side).flatten()
            cols = axis.view(1, -1).repeat(side, 1).flatten()
            bias[:, :, 0] = rows
            bias[:, :, 1] = cols
        else:
            nn.init.uniform_(bias[:, :, 0:2], -0.5, 0.5)
        bias[:, :, 2] = -1.0

    def forward(self, features: Sequence[torch.Tensor], query: torch.Tensor,
                xyzr: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
        """(B, N, C) queries -> (B, N, G, P_in, C // G) sampled features."""
        offset = self.sampling_offset_generator(query)
        points = make_sample_points(offset, xyzr,
                                    self.num_groups * self.in_points)
        return sample_3d(points, features, strides, self.num_groups)
