"""Calibration inputs of `medsam3-rt quantize`: what each quantised graph sees on the user's images.

The backbone is calibrated on the preprocessed calibration images. The detector is calibrated
on what it is fed at run time: the fp32 backbone's features of the same images and the text
embeddings of the prompts the model is deployed for (all prompts in one batch, as `segment`
runs them). Feeds are computed once and shared by every calibration method and engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.io.images import read_image

Feeds = dict[str, np.ndarray]


class FeedReader:
    """ONNX Runtime `CalibrationDataReader` (duck-typed) over a list of feed dicts."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self.feeds = list(feeds)
        self._it: Iterator[Feeds] = iter(self.feeds)

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


def graph_feeds(model_dir: Path, images: Sequence[Path], prompts: Sequence[str], threads: int | None = None) -> dict[str, list[Feeds]]:
    """Inputs of the backbone and the detector for each image (fp32 export, ONNX Runtime CPU)."""
    import medsam3_rt
    from medsam3_rt.preprocess import pixel_values

    seg = medsam3_rt.load(model_dir, "ort-cpu", threads=threads, verify="none")
    try:
        model = seg.model
        text = model.text_batch(list(prompts))
        backbone: list[Feeds] = []
        detector: list[Feeds] = []
        for path in images:
            pixels = pixel_values(read_image(path), model.manifest.preprocess)
            backbone.append({gc.PIXEL_VALUES: pixels})
            feats = model.encode_image(pixels)
            feed = {name: np.asarray(feats[name]) for name in gc.DET_FPN}
            feed[gc.TEXT_FEATURES] = text.features
            feed[gc.TEXT_MASK] = text.mask
            detector.append(feed)
    finally:
        seg.close()
    return {gc.IMAGE_BACKBONE: backbone, gc.DETECTOR: detector}
