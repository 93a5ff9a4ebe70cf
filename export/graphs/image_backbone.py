"""Image backbone graph: one ViT pass feeding the detector neck (and the tracker neck)."""

from __future__ import annotations

import torch
from torch import nn


class ImageBackboneGraph(nn.Module):
    """pixel_values (1, 3, S, S) -> the detector's three FPN levels (+ the tracker's features).

    The detector uses FPN levels 4x, 2x and 1x of the token grid (`Sam3Model` drops the
    0.5x level, so the exporter prunes it). With a `Sam3VideoModel`, the same ViT output
    also feeds the tracker neck, and the tracker mask decoder's high-resolution projections
    (conv_s0 / conv_s1) are applied here once per frame, as `Sam3VideoModel` caches them.
    """

    def __init__(self, detector: nn.Module, video_model: nn.Module | None = None) -> None:
        super().__init__()
        self.detector = detector
        self.video_model = video_model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vision = self.detector.get_vision_features(pixel_values=pixel_values)
        fpn = tuple(vision.fpn_hidden_states[:3])
        if self.video_model is None:
            return fpn
        return fpn + tracker_features(self.video_model, vision)


def tracker_features(video_model: nn.Module, vision: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(feat_s0, feat_s1, vision_feat) of the tracker, NCHW, from the detector's vision output.

    Same computation as `Sam3VideoModel.get_vision_features_for_tracker` followed by the
    conv_s0/conv_s1 projections its tracker applies to the high-resolution levels.
    """
    feats, _pos = video_model.get_vision_features_for_tracker(vision)
    # feats: [HW, B, C] per level, highest resolution first (see Sam3VideoModel).
    sizes = video_model.tracker_model.config.vision_config.backbone_feature_sizes
    maps = [f.permute(1, 2, 0).reshape(f.shape[1], f.shape[2], h, w) for f, (h, w) in zip(feats, sizes)]
    return maps[0], maps[1], maps[2]
