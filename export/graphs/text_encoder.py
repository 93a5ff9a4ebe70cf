"""Text encoder graph: CLIP text transformer + SAM3's projection to the detector width."""

from __future__ import annotations

import torch
from torch import nn


class TextEncoderGraph(nn.Module):
    """(input_ids, attention_mask) int64 (P, T) -> text_features float32 (P, T, C).

    `Sam3Model.get_text_features` projects every token (not the pooled token): the detector
    cross-attends to all of them under the attention mask.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.detector.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
