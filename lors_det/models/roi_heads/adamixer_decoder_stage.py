"""One AdaMixer decoder stage (everything but the mixing, which the decoder
owns so that LORS can share it across stages).

Modified from the official AdaMixer ``AdaMixerDecoderStage``
(https://github.com/MCG-NJU/AdaMixer), re-written for mmdet 3.x.
"""
from typing import Callable, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.model.weight_init import bias_init_with_prob

from ...lors import autocast_dtype
from ...lors.checks import (check_keys, check_non_negative, check_positive,
                            config_block)
from ..layers import FFN, AdaptiveSampling, position_embedding, xyzr_to_xyxy

Mixing = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _branch(dim: int, num_fcs: int) -> nn.Sequential:
    """``num_fcs`` x (Linear, LayerNorm, ReLU)."""
    layers = []
    for _ in range(num_fcs):
        layers += [nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(True)]
    return nn.Sequential(*layers)


@MODELS.register_module()
class AdaMixerDecoderStage(nn.Module):
    """Self-attention, adaptive 3D sampling, (mixing), FFN and the heads.

    Args:
        num_classes (int): foreground classes (sigmoid / focal loss).
        content_dim (int): C.
        num_heads (int): heads of the self-attention.
        feedforward_channels (int): FFN hidden size.
        in_points (int): P_in, sampling points per group.
        num_groups (int): G, sampling groups.
        num_cls_fcs (int): Linear-LN-ReLU blocks before the classifier.
        num_reg_fcs (int): Linear-LN-ReLU blocks before the box regressor.
        ffn (dict): options of :class:`FFN` (``tied``, ``lorita``).
    """

    def __init__(self,
                 num_classes: int = 80,
                 content_dim: int = 256,
                 num_heads: int = 8,
                 feedforward_channels: int = 2048,
                 in_points: int = 32,
                 num_groups: int = 4,
                 num_cls_fcs: int = 1,
                 num_reg_fcs: int = 1,
                 ffn: dict = dict()):
        super().__init__()
        check_positive('num_heads', num_heads)
        check_positive('feedforward_channels', feedforward_channels)
        check_non_negative('num_cls_fcs', num_cls_fcs)
        check_non_negative('num_reg_fcs', num_reg_fcs)
        if content_dim % num_heads:
            raise ValueError(f'num_heads={num_heads} must divide '
                             f'content_dim={content_dim}')
        if content_dim % 4:
            raise ValueError('content_dim must be a multiple of 4 for the '
                             f'xyzr position embedding, got {content_dim}')
        self.num_classes = num_classes
        self.attention = nn.MultiheadAttention(
            content_dim, num_heads, batch_first=True)
        self.attention_norm = nn.LayerNorm(content_dim)
        self.iof_tau = nn.Parameter(torch.empty(num_heads))
        self.sampling = AdaptiveSampling(content_dim, in_points, num_groups)
        ffn = check_keys('ffn', ffn, ('tied', 'lorita'))
        with config_block('ffn'):
            self.ffn = FFN(content_dim, feedforward_channels, **ffn)
        self.ffn_norm = nn.LayerNorm(content_dim)
        self.cls_fcs = _branch(content_dim, num_cls_fcs)
        self.fc_cls = nn.Linear(content_dim, num_classes)
        self.reg_fcs = _branch(content_dim, num_reg_fcs)
        self.fc_reg = nn.Linear(content_dim, 4)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official init: Xavier-uniform for every ``nn.Linear`` (default
        bias), focal prior on the classifier, zero box regressor, tau ~
        U(0, 4), grid-initialised sampling offsets."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
                nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(self.fc_cls.bias, bias_init_with_prob(0.01))
        nn.init.zeros_(self.fc_reg.weight)
        nn.init.zeros_(self.fc_reg.bias)
        nn.init.uniform_(self.iof_tau, 0.0, 4.0)
        self.sampling.init_weights()  # the loop above reset it to Xavier

    def self_attention(self, query: torch.Tensor,
                       xyzr: torch.Tensor) -> torch.Tensor:
        """IoF-biased self-attention with the xyzr position embedding.

        The attention logits get ``tau_h * log(IoF(box_a, box_b) + 1e-7)``;
        as in the official code (mmcv's MultiheadAttention), the residual
        adds the position-embedded query. (B, N, C) -> (B, N, C).
        """
        B, N, C = query.shape
        with torch.no_grad():
            boxes = xyzr_to_xyxy(xyzr)
            iof = bbox_overlaps(boxes, boxes, mode='iof')  # (B, N, N)
            log_iof = (iof + 1e-7).log()
            pe = position_embedding(xyzr, C // 4)
        bias = log_iof[:, None] * self.iof_tau.view(1, -1, 1, 1)
        bias = bias.flatten(0, 1)  # (B * heads, N, N), batch-major
        x = query + pe
        # the mask must have the dtype attention computes q in
        bias = bias.to(autocast_dtype(x.device.type) or x.dtype)
        attn, _ = self.attention(x, x, x, attn_mask=bias, need_weights=False)
        return self.attention_norm(x + attn)

    def forward(
            self, features: Sequence[torch.Tensor], strides: Sequence[int],
            xyzr: torch.Tensor, query: torch.Tensor,
            mixing: Mixing) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the stage.

        Args:
            features (list[Tensor]): L maps (B, C, H_l, W_l).
            strides (list[int]): their strides.
            xyzr (Tensor): (B, N, 4) query boxes (no gradient flows back).
            query (Tensor): (B, N, C) query content.
            mixing (callable): ``(sampled (B, N, G, P_in, c), query) ->
                query``, the decoder's adaptive mixing for this stage.

        Returns:
            tuple: cls logits (B, N, num_classes), xyzr deltas (B, N, 4) and
            the updated query content (B, N, C).
        """
        query = self.self_attention(query, xyzr)
        sampled = self.sampling(features, query, xyzr, strides)
        query = mixing(sampled, query)
        query = self.ffn_norm(self.ffn(query))
        cls_score = self.fc_cls(self.cls_fcs(query))
        delta = self.fc_reg(self.reg_fcs(query))
        return cls_score, delta, query
