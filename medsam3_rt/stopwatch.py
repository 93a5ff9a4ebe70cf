"""Per-stage wall time of one call (the `timings_ms` of results and stream frames)."""

from __future__ import annotations

import time


class Stopwatch:
    """Accumulates milliseconds per stage; `lap(stage)` charges the time since the previous lap."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def reset(self) -> None:
        """Start the next lap now (time since the last lap is not charged to any stage)."""
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._t) * 1e3
        self._t = now
