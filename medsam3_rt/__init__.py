"""medsam3-rt: text-prompted medical image segmentation with SAM3-architecture models.

The runtime needs numpy, onnxruntime, opencv and tokenizers; it never imports torch or
transformers. Research use only: not a medical device.
"""

from ._version import __version__
from .backends import BackendOptions
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

__all__ = [
    "BackendOptions",
    "BackendUnavailableError",
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
    "UsageError",
    "__version__",
    "load",
    "load_manifest",
]
