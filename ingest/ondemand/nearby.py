"""What a filter no strategy is likely to reach gets instead of a face: ``Unreachable``,
and the nearby filters it names, which the catalog can supply (stored faces or a likely
on-demand run).

Apart from the engine (``ingest.ondemand.engine``) because this is the answer to a miss,
not generation: the web layer catches ``Unreachable`` to answer 404 with the nearby
filters, and the search for them only reads the yield table and the stored counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analysis.vocabulary import GENDERS
from ingest.ondemand.ports import OndemandCatalog, Target
from ingest.ondemand.settings import OndemandSettings
from ingest.ondemand.yields import DECADES, Plan, choose, plans


class Unreachable(Exception):
    """No strategy is expected to produce a face for the filter within the budget."""

    def __init__(self, target: Target, plans: list[Plan], nearby: list[dict[str, Any]]):
        best = max(plans, key=lambda p: p.success) if plans else None
        detail = (
            "The catalog cannot currently supply faces for these filters: none is stored, "
            "and the generators are not expected to produce one that passes the robust "
            "age/gender check"
        )
        if best is not None:
            detail += (
                f" (best strategy {best.strategy}: {best.rate:.2%} of candidates pass, "
                f"{best.success:.0%} chance within the {best.budget:g} s budget)"
            )
        super().__init__(detail + ".")
        self.target = target
        self.plans = plans
        self.nearby = nearby
        self.detail = detail + "."


def nearby_filters(
    target: Target,
    catalog: OndemandCatalog,
    settings: OndemandSettings,
    available: Callable[[], list[str]],
    limit: int = 5,
) -> list[dict[str, Any]]:
    """Filters near ``target`` the catalog can supply: stored faces or a likely run.

    Candidates are the decade bands of the same gender and of the other one (a
    gender change counts as 10 years of distance), nearest first. ``available`` gives
    the strategies that can run here (``OnDemand.available``).
    """
    table = catalog.load_yields()
    stored: dict[tuple[str, tuple[int, int]], int] = {}
    for gender, age, n in catalog.cell_counts():
        for band in DECADES:
            if band[0] <= age <= band[1]:
                stored[(gender, band)] = stored.get((gender, band), 0) + int(n)
    genders: list[str | None] = (
        [target.gender, *(g for g in GENDERS if g != target.gender)] if target.gender else [None]
    )
    options: list[tuple[float, int, dict[str, Any]]] = []
    for gender in genders:
        for band in DECADES:
            covered = (
                target.minimum_age <= band[0]
                and band[1] <= target.maximum_age
                and gender == target.gender
            )
            if covered:
                continue
            n = (
                sum(stored.get((g, band), 0) for g in GENDERS)
                if gender is None
                else stored.get((gender, band), 0)
            )
            reachable = (
                choose(
                    plans(
                        table,
                        gender,
                        band[0],
                        band[1],
                        budget=settings.budget,
                        available=available(),
                        batch_sizes=settings.batch_sizes(),
                    ),
                    settings.min_success,
                )
                is not None
            )
            if not n and not reachable:
                continue
            gap = max(0, band[0] - target.maximum_age, target.minimum_age - band[1])
            distance = gap + (10 if gender != target.gender else 0)
            options.append(
                (
                    distance,
                    -n,
                    {
                        "gender": gender,
                        "minimum_age": band[0],
                        "maximum_age": band[1],
                        "stored": n,
                        "on_demand": reachable,
                    },
                )
            )
    options.sort(key=lambda o: (o[0], o[1]))
    return [o[2] for o in options[:limit]]
