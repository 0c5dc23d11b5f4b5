"""Curation: how many faces each gender × age band should hold, and who gets in.

The target per band is its share of ``TARGET_COMPOSITION`` (default
``ingest.bands.DEFAULT_COMPOSITION``) times ``INGEST_TARGET_SIZE``. A batch's faces are
admitted in order of how far below target their band is (the emptiest band, relative to
its target, first), and a face whose band is already at target is rejected
``band_full``. The order decides who gets in whenever admissions are capped (a run's
``max_admitted``), so the scarce bands are never crowded out by the common ones.

Counts per band come from the catalog (``ingest.ports.CatalogView.band_counts``, which
sums the per-cell counters, never scans faces); the decisions are made here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ingest.bands import DEFAULT_COMPOSITION

BAND_FULL = "band_full"
# The run admitted as many faces as it was asked to (``max_admitted``).
LIMIT_REACHED = "limit_reached"


def target_counts(composition: Mapping[str, float] | None, target_size: int) -> dict[str, int]:
    """Faces wanted per ``gender:band`` cell: the shares (normalised) times the size.

    Rounded up, so that no band with a positive share gets a target of zero, and a band
    left out of the composition gets none.
    """
    shares = dict(composition or DEFAULT_COMPOSITION)
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("target composition has no positive share")
    return {cell: math.ceil(share / total * target_size) for cell, share in shares.items()}


@dataclass
class Curator:
    """Admission decisions against targets, updating its counts as it admits."""

    targets: dict[str, int]
    counts: dict[str, int] = field(default_factory=dict)

    def room(self, cell: str) -> int:
        """Faces the cell can still take (0 for a full cell or one without a target)."""
        return max(self.targets.get(cell, 0) - self.counts.get(cell, 0), 0)

    def fill(self, cell: str) -> float:
        """Count over target: 0 for an empty band, ≥ 1 for a full one (inf: no target)."""
        target = self.targets.get(cell, 0)
        return self.counts.get(cell, 0) / target if target > 0 else math.inf

    def order(self, cells: Sequence[str]) -> list[int]:
        """Indices of ``cells`` with the band furthest below target first (stable)."""
        return sorted(range(len(cells)), key=lambda i: (self.fill(cells[i]), i))

    def is_full(self) -> bool:
        """Whether every band with a target has reached it (the worker can rest)."""
        return all(self.room(cell) == 0 for cell in self.targets)

    def admit(self, cells: Sequence[str], limit: int | None = None) -> list[str | None]:
        """For each candidate (by its cell): None if admitted, else the rejection reason.

        Candidates are considered in ``order``; the fill ratios are those before this
        batch, so one batch cannot reorder itself midway. Counts are updated as faces are
        admitted. Past ``limit`` admissions the rest get ``LIMIT_REACHED``.
        """
        decisions: list[str | None] = [BAND_FULL] * len(cells)
        admitted = 0
        for i in self.order(cells):
            if self.room(cells[i]) == 0:
                continue
            if limit is not None and admitted >= limit:
                decisions[i] = LIMIT_REACHED
                continue
            decisions[i] = None
            self.counts[cells[i]] = self.counts.get(cells[i], 0) + 1
            admitted += 1
        return decisions


def curator_for(
    counts: Mapping[str, int], composition: Mapping[str, float] | None, target_size: int
) -> Curator:
    """A curator with the configured targets and the catalog's current ``counts`` per band."""
    return Curator(target_counts(composition, target_size), dict(counts))
