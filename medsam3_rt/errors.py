"""Error types of medsam3-rt.

Every user-facing failure is a `Medsam3Error` subclass with a one-line message that names
the thing, what was expected and how to fix it, and an `exit_code` the CLI returns.
Programming errors are `InternalError`, which deliberately is *not* a `Medsam3Error`: the
CLI prints a traceback hint for those instead of blaming the user.

Exit codes (documented in docs/errors.md):

    0  success
    1  internal error (a bug: rerun with --debug and report it)
    2  usage error (bad option, empty or over-long prompt, output exists)
    3  bad input file or array (missing, corrupt, truncated, wrong shape/dtype)
    4  model problem (export dir, manifest, checkpoint, prompt pack or engine incompatible/corrupt)
    5  backend unavailable (e.g. CUDA requested but onnxruntime-gpu has no CUDA here)
    6  parity or accuracy gate failed
    7  PACS unreachable, refused a request, or timed out (`medsam3-rt pacs`)
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


class Medsam3Error(Exception):
    """Base class of all errors caused by input, configuration or environment."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # Messages must stay one line: the CLI prints them as `error: <message>`.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(Medsam3Error):
    exit_code = 2


class PromptError(UsageError):
    """Empty, whitespace-only or over-long text prompt."""


class OutputExistsError(UsageError):
    """An output would overwrite existing results without --force."""


class InputError(Medsam3Error):
    """A bad input image, volume, video or array."""

    exit_code = 3


class ModelError(Medsam3Error):
    """A problem with a model: export directory, manifest, checkpoint, prompt pack, engine."""

    exit_code = 4


class ManifestError(ModelError):
    pass


class ManifestVersionError(ManifestError):
    pass


class IntegrityError(ModelError):
    """A file of an export directory differs from what the manifest recorded."""


class CheckpointError(ModelError):
    pass


class PromptPackError(ModelError):
    pass


class EngineIncompatibleError(ModelError):
    pass


class BackendUnavailableError(Medsam3Error):
    exit_code = 5

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"backend '{backend}' is unavailable: {reason}")


class MissingDependencyError(Medsam3Error):
    """An optional part of medsam3-rt is not installed (e.g. the `export` extra)."""

    exit_code = 5


class ParityError(Medsam3Error):
    """An exported graph does not reproduce its PyTorch module within tolerance."""

    exit_code = 6


class AccuracyGateError(Medsam3Error):
    exit_code = 6


class PacsError(Medsam3Error):
    """A PACS (DICOMweb server) cannot be reached, refuses a request, or does not answer in time."""

    exit_code = 7


class InternalError(Exception):
    """A bug in medsam3-rt. Not a Medsam3Error on purpose: the user did nothing wrong."""
