"""Peak RSS per stage (issue 21): which part of a run holds the memory, not only how much in total.

One background sampler (`StageMemory`) runs while the runner measures a candidate; every
stopwatch lap (`MeteredStopwatch`) and every phase of the runner reads and resets its running
peak, so each stage gets the highest RSS seen while it ran (absolute bytes, the process as a
whole: weights loaded earlier count in every later stage).
"""

from __future__ import annotations

from medsam3_rt.profiling import RssSampler, rss_bytes
from medsam3_rt.stopwatch import Stopwatch

__all__ = ["MeteredStopwatch", "StageMemory"]


class StageMemory(RssSampler):
    """`RssSampler` whose peak can be cut into consecutive stages."""

    def __init__(self, interval_s: float = 0.005) -> None:
        super().__init__(interval_s)
        self.stage_peaks: dict[str, dict[str, int]] = {}  # candidate -> stage -> bytes
        self.overall = 0  # highest RSS since start(), across laps

    def start(self) -> StageMemory:
        self.overall = 0
        super().start()
        return self

    def lap(self) -> int:
        """Highest RSS since the previous lap (or start), then start the next stage from now."""
        now = rss_bytes()
        peak = max(self.peak, now)
        self.overall = max(self.overall, peak)
        self.peak = now
        return peak

    def stop(self) -> int:
        """Highest RSS since `start()`, laps included (`peak` afterwards too)."""
        self.peak = max(self.overall, super().stop())
        return self.peak

    def record(self, owner: str, stage: str, peak: int) -> None:
        table = self.stage_peaks.setdefault(owner, {})
        table[stage] = max(table.get(stage, 0), peak)


class MeteredStopwatch(Stopwatch):
    """A `Stopwatch` that also charges each lap's peak RSS to its stage (when a sampler runs)."""

    def __init__(self, memory: StageMemory | None, owner: str) -> None:
        super().__init__()
        self.memory, self.owner = memory, owner
        if memory is not None:
            memory.lap()  # what ran before this stopwatch is not charged to its first stage

    def lap(self, stage: str) -> None:
        super().lap(stage)
        if self.memory is not None:
            self.memory.record(self.owner, stage, self.memory.lap())
