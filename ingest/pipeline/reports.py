"""What an ingest run and each of its batches came to: counts by reason, speed, and
where the time went, and the reasons the pipeline itself turns faces away for.

These are the run's results, apart from the stages that produce them, because more than
the pipeline reads them: the ``facecat ingest`` commands print them, the worker's
scheduling passes them on, and on-demand generation learns its yields from them; none of
those readers deals with the stages' models, storage or threads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

ALREADY_INGESTED = "already_ingested"  # seed + generator checksum already in the catalog
STORAGE_ERROR = "storage_error"  # uploads failed after every retry: batch given up
DATABASE_ERROR = "database_error"  # the insert transaction failed: batch given up
ABANDONED = "abandoned"  # generated, then dropped because an earlier batch failed


class BatchFailed(RuntimeError):
    """A batch was given up; the run stops, leaving no row without its objects."""

    def __init__(self, reason: str, message: str, outcome: BatchOutcome) -> None:
        super().__init__(message)
        self.reason = reason
        self.outcome = outcome


@dataclass
class BatchOutcome:
    """What became of one batch's faces."""

    generated: int = 0
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class IngestReport:
    """The result of a run: counts by reason, speed, and where the time went.

    ``timings`` holds seconds per stage. ``generation``, ``estimation``, ``gates`` and
    ``insert`` are wall time; ``encode`` and ``upload`` are summed over the upload
    threads (they run in parallel), and ``store`` is the wall time of encode + upload.
    With ``overlap`` the store stage runs beside the next batch's generation, so the
    stages add up to more than ``seconds``.
    """

    trigger: str
    device: str
    requested: int
    run_id: int | None = None
    generated: int = 0
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    status: str = "running"
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    # Robust-verdict passes per (gender, age) and faces checked, from any gate that
    # counts them (``RobustVerdictGate``): what the on-demand yield table learns from.
    robust_passes: Counter[tuple[str, int]] = field(default_factory=Counter)
    robust_checked: int = 0

    @property
    def faces_per_second(self) -> float:
        """Generated faces per wall-clock second (the speed of the whole pipeline)."""
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def add(self, outcome: BatchOutcome) -> None:
        """Fold one batch's counts into the run's."""
        self.generated += outcome.generated
        self.admitted += outcome.admitted
        self.rejected.update(outcome.rejected)

    def summary(self) -> str:
        """Multi-line human summary for the CLI and the logs."""
        lines = [
            f"run {self.run_id} {self.status}: generated {self.generated}, "
            f"admitted {self.admitted}, rejected {sum(self.rejected.values())} "
            f"in {self.seconds:.1f} s ({self.faces_per_second:.1f} faces/s on {self.device})"
        ]
        for reason, n in self.rejected.most_common():
            lines.append(f"  {reason:18s} {n:6d}")
        if self.timings:
            lines.append(
                "  time: " + ", ".join(f"{stage} {sec:.2f}s" for stage, sec in self.timings.items())
            )
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)
