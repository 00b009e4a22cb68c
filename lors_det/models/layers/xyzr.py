# Modified from MCG-NJU/AdaMixer, bbox_heads/adamixer_decoder_stage.py
"""AdaMixer's ``xyzr`` query boxes.

A box is (x, y, z, r): centre x, y in image pixels, scale
``z = log2(sqrt(w * h))`` and aspect ``r = log2(h / w)``, so that
``w = 2**(z - r/2)`` and ``h = 2**(z + r/2)`` (as the official code encodes
and decodes boxes; see docs/design.md).
"""
import torch


def xyzr_to_xyxy(xyzr: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyzr -> (..., 4) x1y1x2y2 in pixels."""
    # unbind/stack rather than slices and cat: torch 2.1's inductor fails
    # on the backward of the sliced form (same element-wise values)
    x, y, z, r = xyzr.unbind(-1)
    scale = 2.0**z
    w, h = scale * 2.0**(r * -0.5), scale * 2.0**(r * 0.5)
    return torch.stack([x - w * 0.5, y - h * 0.5, x + w * 0.5, y + h * 0.5],
                       dim=-1)


def xyxy_to_xyzr(xyxy: torch.Tensor) -> torch.Tensor:
    """(..., 4) x1y1x2y2 -> (..., 4) xyzr (boxes must have positive size)."""
    xy = 0.5 * (xyxy[..., 0:2] + xyxy[..., 2:4])
    wh = xyxy[..., 2:4] - xyxy[..., 0:2]
    z = wh.prod(-1, keepdim=True).sqrt().log2()
    r = (wh[..., 1:2] / wh[..., 0:1]).log2()
    return torch.cat([xy, z, r], dim=-1)


def refine_xyzr(xyzr: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Apply a stage's (dx, dy, dz, dr): xy move by ``delta * 2**z``."""
    x, y, z, r = xyzr.unbind(-1)  # unbind/stack: see xyzr_to_xyxy
    dx, dy, dz, dr = delta.unbind(-1)
    scale = 2.0**z
    return torch.stack([x + dx * scale, y + dy * scale, z + dz, r + dr],
                       dim=-1)


def position_embedding(xyzr: torch.Tensor,
                       num_feats: int,
                       temperature: float = 10000.) -> torch.Tensor:
    """Sinusoidal embedding of xyzr: (B, N, 4) -> (B, N, 4 * num_feats).

    x and y are divided by 1000 first, as in the official code.
    """
    scale = xyzr.new_tensor([1000., 1000., 1., 1.])
    xyzr = xyzr / scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=xyzr.device)
    dim_t = temperature**(2 * (dim_t // 2) / num_feats)
    pos = xyzr[..., None] / dim_t  # (B, N, 4, num_feats)
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4)
    return pos.flatten(2)  # (B, N, 4 * num_feats), interleaved sin/cos
