"""The ``cell_yield`` table: load it for planning, add measured counts to it.

The arithmetic (priors, rates, plans, what a run teaches) is ``ingest.ondemand.yields``;
this is only its storage, so ingest needs no database code (``SqlOndemandCatalog`` in
``catalog.ingest_services`` calls these for the engine and the ``facecat ingest`` commands).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from catalog.sql.models import CellYield, utcnow
from ingest.ondemand.yields import STRATEGIES, Counts, YieldTable


def load_yields(session: Session) -> YieldTable:
    """Every row of a known strategy, in memory (at most 3 × 2 × 11 of them).

    Rows of retired strategies (``conditional``) stay in the table for the record but
    plan nothing.
    """
    rows = {
        (r.strategy, r.gender, int(r.age_low)): Counts(
            float(r.tried), float(r.passed), float(r.seconds)
        )
        for r in session.scalars(select(CellYield).where(CellYield.strategy.in_(STRATEGIES)))
    }
    return YieldTable(rows)


def reset_yields(session: Session, strategy: str) -> None:
    """Delete ``strategy``'s rows (its weights changed); the caller commits."""
    session.execute(delete(CellYield).where(CellYield.strategy == strategy))


def record_yields(
    session: Session,
    strategy: str,
    updates: Mapping[tuple[str, tuple[int, int]], Counts],
) -> None:
    """Add ``updates`` (per (gender, band)) to the yield rows; the caller commits.

    One ``INSERT … ON CONFLICT DO UPDATE`` per row, so concurrent runs add up instead of
    overwriting each other.
    """
    if not updates:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    for (gender, band), counts in sorted(updates.items()):
        if counts.tried <= 0 and counts.passed <= 0:
            continue
        passed = round(counts.passed)
        tried = max(round(counts.tried), passed)
        stmt = insert(CellYield).values(
            strategy=strategy,
            gender=gender,
            age_low=band[0],
            age_high=band[1],
            tried=tried,
            passed=passed,
            seconds=float(counts.seconds),
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[CellYield.strategy, CellYield.gender, CellYield.age_low],
            set_={
                "tried": CellYield.tried + stmt.excluded.tried,
                "passed": CellYield.passed + stmt.excluded.passed,
                "seconds": CellYield.seconds + stmt.excluded.seconds,
                "updated_at": now,
            },
        )
        session.execute(stmt)
