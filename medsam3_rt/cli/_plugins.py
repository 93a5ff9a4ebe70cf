"""Lazy bridges to the optional packages, with an error naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError


def _optional(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs the '{extra}' extra ({e.name or e} is not installed): pip install 'medsam3-rt[{extra}]' "
            "(on CPU-only machines add -c constraints/cpu.txt)"
        ) from None


def export_module() -> ModuleType:
    return _optional("medsam3_export", "export", "`medsam3-rt export`")
