"""medsam3-rt: text-prompted medical image segmentation with SAM3-architecture models.

The runtime needs numpy, onnxruntime, opencv and tokenizers; it never imports torch or
transformers. Research use only: not a medical device.
"""

from ._version import __version__
from .backends import BackendOptions
from .demo import demo_model_dir
from .errors import (
    BackendUnavailableError,
    InputError,
    IntegrityError,
    ManifestError,
    Medsam3Error,
    ModelError,
    PromptError,
    UsageError,
)
from .manifest import Manifest, load_manifest
from .preprocess import IntensityWindow
from .segmenter import Segmenter, SegmentResult, load
from .tracker.settings import StreamOptions
from .tracker.streaming import FrameResult, Stream

__all__ = [
    "BackendOptions",
    "BackendUnavailableError",
    "FrameResult",
    "InputError",
    "IntegrityError",
    "IntensityWindow",
    "Manifest",
    "ManifestError",
    "Medsam3Error",
    "ModelError",
    "PromptError",
    "SegmentResult",
    "Segmenter",
    "Stream",
    "StreamOptions",
    "UsageError",
    "__version__",
    "demo_model_dir",
    "load",
    "load_manifest",
]
