"""Scale-out: many studies on a Ray cluster (`segment --ray`), and a Triton model repository.

Ray is an optional extra (`pip install 'medsam3-rt[scale]'`); nothing here imports it at module
load, so the runtime stays importable without it.
"""

from __future__ import annotations

from .ray_batch import BatchReport, StudySettings, segment_studies

__all__ = ["BatchReport", "StudySettings", "segment_studies"]
