"""Per-cell yields of each generation strategy, and the choice they drive.

``cell_yield`` rows hold, per (strategy, gender, age band), how many candidates were
tried, how many robustly passed and the seconds spent; the catalog reads and adds to them
(``ingest.ondemand.ports.YieldStore``) and this module does the arithmetic. From them
``plan`` estimates, for a filter and a time budget, each strategy's chance of a passing
face per candidate and its cost per candidate, and picks the strategy with the shortest
expected time to a passing face, or none when no strategy's chance of success within
the budget reaches ``min_success`` (the caller answers 404 at once).

Why decade bands and not single years: a year-cell sees 1/100 of the traffic and its
estimate would stay at the prior for ever; a decade is narrow enough for the filters
users send (``female 40-49``) and wide enough to learn from. A filter covering part of
a band gets that band's rate scaled by the covered fraction (a uniform spread inside the
band), which underestimates targeted strategies a little: conservative on purpose.

Priors, for cells nobody has measured: a Beta(1, 19) prior, i.e. 5% with the weight of
20 candidates. Optimistic (the DCGAN's rarest reachable cells are below 1.5%), so an
unmeasured cell is tried rather than refused, and bounded, so a few hundred failures pull
it down: ``(passed + 1) / (tried + 20)``. Costs per candidate default to ``PRIOR_COST``
until a strategy has ``MIN_COST_SAMPLES`` measured candidates. ``facecat ingest
measure-yields`` replaces the priors by measurements.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from analysis.vocabulary import GENDERS

logger = logging.getLogger(__name__)

SAMPLE = "sample"  # rejection sampling with the default generator (untargeted)
OPTIMISE = "optimise"  # guarded latent optimisation (targeted)
STEER = "steer"  # the photoreal generator steered in style space (targeted)
STRATEGIES: tuple[str, ...] = (SAMPLE, STEER, OPTIMISE)
TARGETED = frozenset({OPTIMISE, STEER})
WHOLE_BATCHES = frozenset({OPTIMISE})
DECADES: tuple[tuple[int, int], ...] = (*((lo, lo + 9) for lo in range(0, 90, 10)), (90, 100))

PRIOR_PASSED = 1.0
PRIOR_TRIED = 20.0
# Seconds per candidate before a strategy has been measured on this machine: the photoreal
# generator with framing and the prefiltered robust gate (about 0.3 s a face on 2 CPU
# cores, docs/photoreal.md), the same plus steering, and guarded optimisation measured
# on the 64 px DCGAN (~55 s per 32 candidates; far slower at 1024 px).
PRIOR_COST: dict[str, float] = {SAMPLE: 0.3, STEER: 0.35, OPTIMISE: 1.7}
MIN_COST_SAMPLES = 64
# Ages a targeted strategy can aim at. Steering's edits stop at the step where faces stop
# being photos: the oldest it was measured to reach is the 80s (3-4 of 32 candidates at
# 80-89, 0 of 32 at 90-100, docs/photoreal.md), so a filter entirely past 89 is not its
# to try, and with sampling measured there too it answers 404 at once.
REACH: dict[str, tuple[int, int]] = {STEER: (0, 89)}

Key = tuple[str, str, int]  # (strategy, gender, band low)


def band_of(age: float) -> tuple[int, int]:
    """The decade band holding ``age`` (rounded, clamped to 0..100)."""
    age = min(max(round(age), 0), 100)
    return DECADES[min(age // 10, len(DECADES) - 1)]


def _overlap(low: int, high: int, band: tuple[int, int]) -> int:
    return max(0, min(high, band[1]) - max(low, band[0]) + 1)


def bands_within(minimum_age: int, maximum_age: int) -> list[tuple[int, int]]:
    """The bands a filter covers entirely (only those learn from a filtered run)."""
    return [b for b in DECADES if minimum_age <= b[0] and b[1] <= maximum_age]


@dataclass
class Counts:
    """tried / passed / seconds of one (strategy, gender, band) row."""

    tried: float = 0.0
    passed: float = 0.0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Posterior mean chance that a candidate passes (Beta prior, see module doc)."""
        return (self.passed + PRIOR_PASSED) / (self.tried + PRIOR_TRIED)


@dataclass(frozen=True)
class Plan:
    """One strategy's outlook for a filter within a budget."""

    strategy: str
    gender: str | None  # the gender a targeted strategy aims at (None: untargeted)
    rate: float  # chance one candidate passes the filter
    cost: float  # seconds per candidate
    batch_size: int
    budget: float

    @property
    def candidates(self) -> int:
        """Candidates that fit in the budget.

        Sampling strategies shrink their batches to fit a short budget, so any number of
        candidates fits. Guarded optimisation costs about as much for one latent as for
        a batch (its time is the optimisation steps), so only whole batches count.
        """
        if self.cost <= 0:
            return 0
        if self.strategy in WHOLE_BATCHES:
            return math.floor(self.budget / (self.cost * self.batch_size)) * self.batch_size
        return math.floor(self.budget / self.cost)

    @property
    def success(self) -> float:
        """Chance of at least one passing face within the budget."""
        return 1.0 - (1.0 - min(self.rate, 1.0)) ** self.candidates

    @property
    def expected_seconds(self) -> float:
        """Expected time to the first passing face (geometric: cost / rate)."""
        if self.rate <= 0:
            return math.inf
        return self.cost / self.rate

    def as_dict(self) -> dict[str, object]:
        """For logs, the CLI and the table in docs/operations.md."""
        return {
            "strategy": self.strategy,
            "gender": self.gender,
            "rate": round(self.rate, 6),
            "cost_s": round(self.cost, 4),
            "expected_s": round(self.expected_seconds, 2),
            "success": round(self.success, 3),
        }


@dataclass
class YieldTable:
    """All ``cell_yield`` rows in memory (at most 3 × 2 × 11 rows)."""

    rows: dict[Key, Counts] = field(default_factory=dict)

    def counts(self, strategy: str, gender: str, band: tuple[int, int]) -> Counts:
        """The row, or empty counts (the prior) for a cell never measured."""
        return self.rows.get((strategy, gender, band[0]), Counts())

    def cost(self, strategy: str) -> float:
        """Measured seconds per candidate of ``strategy``, pooled over its rows.

        For the untargeted sampler every row counts every candidate, so any row has the
        same ratio; pooling is exact there and a tried-weighted mean elsewhere.
        """
        tried = sum(c.tried for (s, _, _), c in self.rows.items() if s == strategy)
        seconds = sum(c.seconds for (s, _, _), c in self.rows.items() if s == strategy)
        if tried < MIN_COST_SAMPLES or seconds <= 0:
            return PRIOR_COST[strategy]
        return seconds / tried

    def rate(self, strategy: str, gender: str | None, minimum_age: int, maximum_age: int) -> float:
        """Chance that one candidate of ``strategy`` robustly lands in the filter.

        Untargeted: the sum over covered bands and genders of the band rate times the
        fraction of the band covered. Targeted at ``gender`` with ages drawn uniformly
        in the filter: the band rates weighted by how much of the filter each band holds,
        times the covered fraction.
        """
        width = maximum_age - minimum_age + 1
        genders = GENDERS if gender is None else (gender,)
        total = 0.0
        for g in genders:
            for band in DECADES:
                overlap = _overlap(minimum_age, maximum_age, band)
                if not overlap:
                    continue
                fraction = overlap / (band[1] - band[0] + 1)
                weight = 1.0 if strategy not in TARGETED else overlap / width
                total += weight * fraction * self.counts(strategy, g, band).rate
        return min(total, 1.0)


def plans(
    table: YieldTable,
    gender: str | None,
    minimum_age: int,
    maximum_age: int,
    *,
    budget: float,
    available: Iterable[str],
    batch_sizes: Mapping[str, int],
) -> list[Plan]:
    """Every available strategy's plan for the filter, best (shortest expected time) first.

    A targeted strategy asked for either gender aims at the gender it reaches best.
    """
    out: list[Plan] = []
    for strategy in available:
        low, high = REACH.get(strategy, (0, 100))
        if minimum_age > high or maximum_age < low:
            continue
        cost = table.cost(strategy)
        if strategy in TARGETED:
            aims = GENDERS if gender is None else (gender,)
            rate, aim = max((table.rate(strategy, g, minimum_age, maximum_age), g) for g in aims)
        else:
            rate, aim = table.rate(strategy, gender, minimum_age, maximum_age), None
        out.append(Plan(strategy, aim, rate, cost, batch_sizes.get(strategy, 32), budget))
    return sorted(out, key=lambda p: (p.expected_seconds, -p.success))


def choose(all_plans: list[Plan], min_success: float) -> Plan | None:
    """The fastest plan whose chance of success within the budget reaches ``min_success``."""
    viable = [p for p in all_plans if p.success >= min_success]
    return min(viable, key=lambda p: p.expected_seconds) if viable else None


def untargeted_updates(
    generated: int,
    seconds: float,
    passes: Mapping[tuple[str, int], int],
    genders: Iterable[str],
    bands: Iterable[tuple[int, int]],
) -> dict[tuple[str, tuple[int, int]], Counts]:
    """Yield updates of an untargeted run: every candidate was a try at every cell observed.

    Only cells whose passes the run could observe are given (``bands`` fully inside the
    filter, ``genders`` of the filter); passes are counted into their band.
    """
    bands = list(bands)
    updates = {(g, b): Counts(generated, 0.0, seconds) for g in genders for b in bands}
    for (gender, age), n in passes.items():
        key = (gender, band_of(age))
        if key in updates:
            updates[key].passed += n
    return updates


def targeted_updates(
    aims: Mapping[tuple[str, int], int],
    seconds: float,
    passes: Mapping[tuple[str, int], int],
) -> dict[tuple[str, tuple[int, int]], Counts]:
    """Yield updates of a targeted run: tries per aimed band, passes per landed band.

    ``seconds`` is shared out in proportion to the tries.
    """
    total = sum(aims.values())
    updates: dict[tuple[str, tuple[int, int]], Counts] = {}
    for (gender, age), n in aims.items():
        counts = updates.setdefault((gender, band_of(age)), Counts())
        counts.tried += n
        counts.seconds += seconds * n / total if total else 0.0
    for (gender, age), n in passes.items():
        updates.setdefault((gender, band_of(age)), Counts()).passed += n
    return updates


def ingest_run_updates(report: object) -> dict[tuple[str, tuple[int, int]], Counts] | None:
    """What an ingest run teaches the ``sample`` rows (record them with ``SAMPLE``).

    Ingest samples without a target, so every generated face was a try at every cell, and
    each robust pass counts in its (gender, band). Faces the cheap gates rejected first
    (mostly uncertain gender) count as tries that did not pass, which they would nearly
    always have been. None (nothing to record) when the run had no robust gate.
    """
    checked = int(getattr(report, "robust_checked", 0))
    if not checked:
        return None
    timings: Mapping[str, float] = getattr(report, "timings", {})
    seconds = sum(timings.get(k, 0.0) for k in ("generation", "detection", "estimation", "gates"))
    return untargeted_updates(
        int(getattr(report, "generated", 0)),
        seconds,
        getattr(report, "robust_passes", {}),
        GENDERS,
        DECADES,
    )
