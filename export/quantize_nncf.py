"""int8 of one graph with NNCF for OpenVINO, the `--engine openvino` path.

NNCF's post-training quantisation works on the OpenVINO model read from the exported ONNX:
it applies smooth-quant to the transformer MatMuls, places quantisers where OpenVINO's
low-precision transformations fuse them, and calibrates on the same inputs as the ORT path.
The result is saved as OpenVINO IR (`.xml` + `.bin`, weights int8, the rest fp32): the
`openvino` backend's `read_model` loads it like an ONNX file. `nncf` is in the `openvino` extra.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from medsam3_rt.errors import MissingDependencyError

from .quantize_calib import Feeds


def require_nncf() -> None:
    """Fail early with the install line when NNCF or OpenVINO is missing."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"--engine openvino needs NNCF and OpenVINO ({e}); pip install 'medsam3-rt[openvino]'") from None


def describe() -> str:
    import nncf
    import openvino

    return (
        f"NNCF {nncf.__version__} post-training quantisation (transformer preset: smooth-quant, "
        f"S8 per-channel weights, U8/S8 activations) for OpenVINO {openvino.__version__.split('-')[0]}, OpenVINO IR"
    )


def quantize_openvino(src: Path, dst: Path, feeds: Sequence[Feeds], keep_fp32: Sequence[str]) -> None:
    """Write the NNCF int8 IR of the ONNX graph `src` to `dst` (.xml; the .bin goes next to it)."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)  # its INFO lines list every ignored node
    model = ov.Core().read_model(str(src))
    present = {op.get_friendly_name() for op in model.get_ops()}
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(feeds)),
        subset_size=len(feeds),
        model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=nncf.IgnoredScope(names=[n for n in keep_fp32 if n in present], validate=False),
    )
    ov.save_model(quantized, str(dst), compress_to_fp16=False)
