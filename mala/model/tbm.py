"""Token Balance Module (paper eq. 5): fuse first/last encoder tokens with the last decoder tokens."""

from __future__ import annotations

import torch
from torch import nn


class TokenBalanceModule(nn.Module):
    """Y = LP2(concat(LP1(concat(Z_enc_first, Z_enc_last)), Z_dec_last)), one 2 x p x p map per patch.

    With `use_encoder_tokens=False` (the paper's "without TBM" ablation) Y = LP2(Z_dec_last).
    """

    def __init__(self, encoder_dim: int, decoder_dim: int, out_dim: int, use_encoder_tokens: bool = True,
                 first_dim: int | None = None):
        """`first_dim`: width of Z_enc_first when it differs from the encoder's (the hybrid's backbone tokens)."""
        super().__init__()
        self.use_encoder_tokens = use_encoder_tokens
        if use_encoder_tokens:
            self.lp1 = nn.Linear((first_dim or encoder_dim) + encoder_dim, decoder_dim)
        self.lp2 = nn.Linear(2 * decoder_dim if use_encoder_tokens else decoder_dim, out_dim)

    def forward(self, enc_first: torch.Tensor, enc_last: torch.Tensor, dec_last: torch.Tensor) -> torch.Tensor:
        if not self.use_encoder_tokens:
            return self.lp2(dec_last)
        encoder_tokens = self.lp1(torch.cat([enc_first, enc_last], dim=-1))
        return self.lp2(torch.cat([encoder_tokens, dec_last], dim=-1))
