"""`medsam3-rt segment --ray ADDRESS`: the CLI side of the Ray batch path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from ..cli.console import STATE, out_console, say
from .ray_batch import StudySettings, raise_for_failures, run_jobs


def segment_on_ray(
    model_dir: Path,
    jobs: Sequence[Any],
    todo: Sequence[tuple[Any, list[Path]]],
    prompts: list[str],
    output: Path,
    address: str,
    actors: int,
    settings: dict[str, Any],
) -> None:
    """Run the planned jobs on Ray actors, print the table and the throughput, fail with one line if any study failed."""
    s = StudySettings(model_dir=model_dir, prompts=tuple(prompts), output=output, **settings)
    planned = {j.stem for j, _ in todo}
    say(f"ray: {len(todo)} stud{'y' if len(todo) == 1 else 'ies'} on {actors} actor(s) ({len(jobs) - len(todo)} already complete)")
    report = run_jobs([j for j, _ in todo], s, address=address, actors=actors, skipped=[j.stem for j in jobs if j.stem not in planned])
    if not STATE.quiet and len(report.rows) <= 24:
        table = Table("input", "prompt", "score / volume", "area px", title="medsam3-rt segment (ray)")
        for row in report.rows:
            table.add_row(*row)
        out_console.print(table)
    say(
        f"ray: wrote {len(report.written)} studies to {output} in {report.seconds:.1f} s "
        f"({report.studies_per_second:.2f} studies/s on {actors} actor(s))"
    )
    raise_for_failures(report)
