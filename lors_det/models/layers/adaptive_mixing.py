# Modified from MCG-NJU/AdaMixer, bbox_heads/adaptive_mixing_operator.py
"""AdaMixer's adaptive mixing of sampled features, for all decoder stages.

Per query q, stage i and sampling group g (c = C / G channels per group)::

    x (P_in, c) -> ReLU(LN(x @ M_i(q)))        ACM, M (c, c)
                -> ReLU(LN(S_i(q) @ x))        ASM, S (P_out, P_in)
    out = LN_i(q + W_o,i flatten_g(x) + b_i)   W_o: (C, G * P_out * c)

LN over (points, channels) has no affine parameters; LN_i (affine) is the
stage's own. The matrices come from ``generator`` and the output linear from
``out_proj``; both are stacks over stages, chosen by config:

* ``lorsa=None``: one dense generator per stage (AdaMixer),
  ``lorsa=dict(rank=16, num_factors=[1, 1, 2, 2, 3, 3])``: LORSA.
* ``lorst=None``: one dense output linear per stage (AdaMixer),
  ``lorst=dict(rank=8)``: LORST.

The module is owned once by the decoder and called with the stage index;
nothing is deep-copied per stage.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS

from ...lors import (LORSAGenerator, LORSTLinear, StackedGenerator,
                     StackedLinear, autocast_dtype)
from ...lors.checks import (check_divides, check_keys, check_positive,
                            config_block)


def mix(x: torch.Tensor, M: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """ACM then ASM.

    Args:
        x (Tensor): (B, N, G, P_in, c) sampled features.
        M (Tensor): (B, N, G, c, c) channel mixing matrices (in x out).
        S (Tensor): (B, N, G, P_out, P_in) spatial mixing matrices.

    Returns:
        Tensor: (B, N, G, P_out, c), in the inputs' dtype; float32 under
        autocast.

    Under autocast (``--amp``) the mixing runs in float32: the per-query
    matrices are unnormalised generator outputs and each product sums over
    up to 128 terms before the LayerNorm, so half precision risks overflow
    and loses the small private low-rank terms; the generator matmuls (the
    bulk of the FLOPs) still run in half precision. Without autocast nothing
    is cast (a float64 model mixes in float64).
    """
    if autocast_dtype(x.device.type) is None:
        return _mix(x, M, S)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _mix(x.float(), M.float(), S.float())


def _mix(x: torch.Tensor, M: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    # the normalised shapes as Python ints (P and c are config constants):
    # traced tensor sizes would make an exported graph's LayerNorm shape
    # depend on the batch and fail with symbolic axes
    P_in, c, P_out = int(x.shape[-2]), int(M.shape[-1]), int(S.shape[-2])
    out = x @ M
    out = F.relu(F.layer_norm(out, (P_in, c)), inplace=True)
    out = S @ out
    return F.relu(F.layer_norm(out, (P_out, c)), inplace=True)


# the arguments of LORSAGenerator and LORSTLinear a config may set
LORS_KEYS = ('rank', 'num_factors', 'use_shared', 'use_private')


@MODELS.register_module()
class AdaptiveMixing(nn.Module):
    """Adaptive channel + spatial mixing for a stack of decoder stages.

    Args:
        content_dim (int): C, query size.
        feat_channels (int): channels of the sampled features (= C here).
        in_points (int): P_in, sampled points per group.
        out_points (int): P_out, mixed points per group.
        num_groups (int): G, sampling groups; must divide ``feat_channels``.
        num_stages (int): number of decoder stages sharing this module.
        lorsa (dict, optional): LORSA args (``rank``, ``num_factors``,
            ``use_shared``, ``use_private``) for the ACM/ASM generator.
        lorst (dict, optional): LORST args (``rank``, ``num_factors``,
            ``use_shared``, ``use_private``) for the output linear.
        out_proj_lorita (dict, optional): without LORST, train each stage's
            output linear as a LoRITa product (``num_factors``).
    """

    def __init__(self,
                 content_dim: int = 256,
                 feat_channels: int = 256,
                 in_points: int = 32,
                 out_points: int = 128,
                 num_groups: int = 4,
                 num_stages: int = 6,
                 lorsa: Optional[dict] = None,
                 lorst: Optional[dict] = None,
                 out_proj_lorita: Optional[dict] = None):
        super().__init__()
        check_divides('num_groups', num_groups, 'feat_channels', feat_channels)
        check_positive('in_points', in_points)
        check_positive('out_points', out_points)
        c = feat_channels // num_groups
        self.num_groups = num_groups
        self.in_points, self.out_points = in_points, out_points
        shapes = [(c, c), (out_points, in_points)]  # M (ACM), S (ASM)
        if lorsa is None:
            self.generator = StackedGenerator(content_dim, shapes, num_groups,
                                              num_stages)
        else:
            check_keys('mixing.lorsa', lorsa, LORS_KEYS)
            with config_block('mixing.lorsa'):
                self.generator = LORSAGenerator(content_dim, shapes,
                                                num_groups, num_stages,
                                                **lorsa)
        mixed = num_groups * out_points * c
        if lorst is None:
            self.out_proj = StackedLinear(
                mixed, content_dim, num_stages, lorita=out_proj_lorita)
        elif out_proj_lorita is not None:
            raise ValueError('AdaptiveMixing: lorst and out_proj_lorita both '
                             'set; choose one for the output linear')
        else:
            check_keys('mixing.lorst', lorst, LORS_KEYS)
            with config_block('mixing.lorst'):
                self.out_proj = LORSTLinear(mixed, content_dim, num_stages,
                                            **lorst)
        self.norms = nn.ModuleList(
            nn.LayerNorm(content_dim) for _ in range(num_stages))

    def forward(self, x: torch.Tensor, query: torch.Tensor,
                stage: int) -> torch.Tensor:
        """Mix sampled features into the queries.

        Args:
            x (Tensor): (B, N, G, P_in, c) sampled features.
            query (Tensor): (B, N, C) query content.
            stage (int): decoder stage index.

        Returns:
            Tensor: (B, N, C) updated query content.
        """
        B, N = query.shape[:2]
        M, S = self.generator(query, stage)
        out = mix(x, M, S).reshape(B, N, -1)  # (B, N, G * P_out * c)
        return self.norms[stage](query + self.out_proj(out, stage))
