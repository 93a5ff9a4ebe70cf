"""int8 of one ONNX graph with ONNX Runtime's static quantiser (QDQ), the `--engine ort` path.

Activations uint8 (asymmetric), weights int8, per output channel by default. The calibration
method sets the activation ranges: MinMax (the observed range: no clipping, coarsest steps),
Percentile (clips the top 0.001 % of |x|: finer steps for the bulk, saturates outliers) or
Entropy (the KL-divergence-minimising threshold of TensorRT's recipe). Nodes named in
`keep_fp32` are left out (mixed precision, see `quantize_scopes`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .quantize_calib import FeedReader, Feeds
from .quantize_scopes import QUANTISED_OPS

METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.999
ENTROPY_BINS = 2048


@dataclass(frozen=True)
class OrtRecipe:
    method: str = "minmax"
    per_channel: bool = True

    def describe(self) -> str:
        ranges = f"Percentile {PERCENTILE}" if self.method == "percentile" else {"minmax": "MinMax", "entropy": "Entropy"}[self.method]
        return f"onnxruntime static QDQ, U8 activations ({ranges}), S8 {'per-channel' if self.per_channel else 'per-tensor'} weights"


def quantize_onnx(src: Path, dst: Path, feeds: Sequence[Feeds], recipe: OrtRecipe, keep_fp32: Sequence[str], work: Path) -> None:
    """Write the int8 QDQ version of `src` to `dst` (+ `dst.data`), calibrated on `feeds`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if recipe.method not in METHODS:
        raise ValueError(f"calibration method '{recipe.method}' is not one of {', '.join(METHODS)}")
    pre = work / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=True)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[recipe.method]
    # DedicatedQDQPair: a tensor read by a quantised and a kept-fp32 node reaches the fp32 one unrounded
    extra: dict[str, object] = {"DedicatedQDQPair": True}
    # Not CalibMaxIntermediateOutputs: onnxruntime 1.32 clears the collected outputs at that count
    # without folding them into the ranges (calibrate.py MinMaxCalibrater.collect_data), so it
    # would calibrate on the last partial chunk only. Memory is all inputs' activations at once.
    if recipe.method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    with _entropy_histogram_bins(ENTROPY_BINS if recipe.method == "entropy" else None):
        quantize_static(
            str(pre),
            str(dst),
            FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_exclude=list(keep_fp32),
            calibrate_method=method,
            use_external_data_format=True,
            extra_options=extra,
        )
    pre.unlink(missing_ok=True)
    for data in work.glob(f"{pre.name}*.data"):
        data.unlink()


@contextmanager
def _entropy_histogram_bins(bins: int | None) -> Iterator[None]:
    """Give onnxruntime's Entropy calibrator TensorRT's 2048-bin histogram.

    `quantize_static` (onnxruntime 1.32) passes no bin count to the calibrator, whose default
    (128 bins for 128 quantised bins) leaves the KL search a single candidate, the full range:
    Entropy then equals MinMax exactly (measured: all 83 activation scales of the demo backbone
    identical). `create_calibrator` is looked up in `onnxruntime.quantization.quantize` at call
    time, so wrapping it there for the duration of one call adds the bin count and nothing else.
    """
    if bins is None:
        yield
        return
    import importlib

    ortq = importlib.import_module("onnxruntime.quantization.quantize")  # the package's `quantize` attribute is a function
    original = ortq.create_calibrator

    def with_bins(*args: Any, **kwargs: Any) -> Any:
        kwargs["extra_options"] = {**(kwargs.get("extra_options") or {}), "num_bins": bins}
        return original(*args, **kwargs)

    ortq.create_calibrator = with_bins
    try:
        yield
    finally:
        ortq.create_calibrator = original
