"""EarNet: a compact, streaming-friendly CNN over log-mel windows with per-frame outputs.

Input: log-mel [B, frames, 64] (absolute level, from `earwitness.detectors.frontend`).
The network first normalises each window (subtracts its mean log-mel), so a sound scores
the same at any level above the noise floor; training adds +-30 dB gain on top.

A strided stem and depthwise-separable blocks reduce time by 4 (40 ms per output frame)
and frequency to 2 bands; a temporal convolution gives each output frame context.
Outputs: per-frame logits [B, T', labels] and per-frame embeddings [B, T', emb]; with
`n_aux` > 0 also the window's logits of the teacher's classes [B, n_aux] (AudioSet, distilled
from YAMNet, which scores a whole window), which makes the embedding know a book, a plate or a
typewriter, and names what an event sounds like. That head reads the window's mean embedding: being
linear, it gives the mean of per-frame logits at one frame's cost (per frame it was the second
costliest layer at run time, for a detail only an event reads).
The detector scores a window by the max over the frames of its newest part (the hop), so
events are located to within a hop and close events are not merged.
"""

from __future__ import annotations

import torch
from torch import nn

TIME_STRIDE = 4
FRAME_HOP_S = 0.010 * TIME_STRIDE
WIDTHS = (24, 32, 48, 64, 96)
"""Channels of the stem and the blocks; the stem, over 49 x 32 cells, costs most at run time."""


class DSBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride=(1, 1), dilation=(1, 1)) -> None:
        super().__init__()
        pad = (dilation[0], dilation[1])
        self.dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=pad, dilation=dilation, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.residual = cin == cout and tuple(stride) == (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.dw(x)))
        y = self.bn2(self.pw(y))
        return self.act(y + x if self.residual else y)


class EarNet(nn.Module):
    def __init__(self, n_labels: int, widths: tuple[int, ...] = WIDTHS, emb_dim: int = 96, n_aux: int = 0) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU())
        self.blocks = nn.Sequential(
            DSBlock(w0, w1, stride=(1, 2)),  # T/2, F/4
            DSBlock(w1, w2, stride=(2, 2)),  # T/4, F/8
            DSBlock(w2, w2, dilation=(2, 1)),
            DSBlock(w2, w3, stride=(1, 2)),  # F/16
            DSBlock(w3, w3, dilation=(4, 1)),
            DSBlock(w3, w4, stride=(1, 2)),  # F/32
        )
        self.temporal = nn.Sequential(
            nn.Conv1d(w4 * 2, emb_dim, 3, padding=1, bias=False), nn.BatchNorm1d(emb_dim), nn.ReLU()
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Conv1d(emb_dim, n_labels, 1)
        self.aux_head = nn.Conv1d(emb_dim, n_aux, 1) if n_aux else None

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = logmel - logmel.mean(dim=(1, 2), keepdim=True)  # level normalisation per window
        x = (x * 0.25).unsqueeze(1)  # [B, 1, T, F]
        x = self.blocks(self.stem(x))  # [B, C, T', F']
        x = x.permute(0, 1, 3, 2).flatten(1, 2)  # [B, C*F', T']
        emb = self.temporal(x)  # [B, E, T']
        logits = self.head(self.dropout(emb))  # [B, L, T']
        if self.aux_head is None:
            return logits.transpose(1, 2), emb.transpose(1, 2)
        return logits.transpose(1, 2), emb.transpose(1, 2), self.aux_head(emb.mean(dim=2, keepdim=True)).squeeze(2)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
