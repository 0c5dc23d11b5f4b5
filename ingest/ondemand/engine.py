"""On-demand generation: plan from measured yields, single flight, admit through ingest.

``OnDemand.supply(target)`` is what the catalog's supplier (``catalog.ingest_services``) calls
when no stored face matches a filter. In order:

1. **Plan** (``ingest.ondemand.yields``): each available strategy's chance of a passing
   face per candidate and cost per candidate, from the measured yields. No strategy
   likely to succeed within the budget → ``Unreachable`` at once (the web layer answers
   404 with nearby filters the catalog can supply) and a backfill request.
2. **Single flight** (``ingest.ondemand.ports.JobBoard``): claim the filter's job. The
   claimant re-checks the catalog (a run may have just finished), is charged one
   generation, and generates; everyone else waits for its run and takes a face it
   admitted. Joiners are not charged: they cost no generation.
3. **Generate** through ``ingest.pipeline.run_ingest`` with the strategy's generator
   adapter and the on-demand gates (age range, broken image, black border, a prefilter on the
   plain verdict, the augmentation-robust verdict against the filter, near-duplicates).
   Every passing candidate of the batches run is admitted (objects first, row last);
   the run stops after the first batch that admitted a face, or when the next batch
   would end past the budget.
4. **Learn**: the run's tries, passes and seconds go into the yield table; a miss or a
   slow hit queues a backfill request, which the worker serves with ``run_backfill``.

Every row it reads or writes goes through ``OndemandCatalog`` (``ingest.ondemand.ports``),
which ``catalog`` implements: the engine holds the strategy, not the SQL.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from analysis.vocabulary import GENDERS
from ingest.gates import HashIndex
from ingest.ondemand.models import ModelSet
from ingest.ondemand.nearby import Unreachable, nearby_filters
from ingest.ondemand.ports import (
    FULFILLED,
    NOT_FOUND,
    PENDING,
    SLOW,
    UNREACHABLE,
    OndemandCatalog,
    StoredFace,
    Target,
)
from ingest.ondemand.settings import OndemandSettings
from ingest.ondemand.yields import (
    OPTIMISE,
    SAMPLE,
    STEER,
    STRATEGIES,
    TARGETED,
    WHOLE_BATCHES,
    Plan,
    bands_within,
    choose,
    plans,
    targeted_updates,
    untargeted_updates,
)
from ingest.pipeline import run_ingest
from ingest.pipeline.reports import IngestReport
from ingest.ports import ObjectStore

logger = logging.getLogger(__name__)

# A joiner waits this much past its own budget: the owner started earlier, but its last
# batch may end up to one batch after its deadline.
JOIN_GRACE_SECONDS = 1.0
# A claim outlives the budget by this much before another process may take it over.
CLAIM_TTL_EXTRA_SECONDS = 30.0
MAX_RUN_CANDIDATES = 100_000


class OnDemand:
    """On-demand generation for one catalog (its rows + its object storage) in one process.

    ``catalog`` is ``catalog.sql.ondemand.SqlOndemandCatalog`` in the app (any
    ``OndemandCatalog`` will do). ``models`` is called (once, under a lock) the first time
    a run needs them, so a web process that never meets an unmet filter never imports
    torch. ``available`` names the strategies usable without loading anything, for
    planning.
    """

    def __init__(
        self,
        *,
        settings: OndemandSettings,
        catalog: OndemandCatalog,
        storage: ObjectStore,
        models: Callable[[], ModelSet],
        available: Callable[[], Iterable[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.storage = storage
        self._load_models = models
        self._available = available
        self._models: ModelSet | None = None
        self._models_lock = threading.Lock()
        # One generation at a time per process: the CPU (or GPU) is the bottleneck, and
        # two runs side by side would each take twice as long.
        self._run_lock = threading.Lock()
        self.index = HashIndex()
        self.clock = clock

    # --- models and planning --------------------------------------------------------

    def models(self) -> ModelSet:
        """The models, loaded on first use."""
        with self._models_lock:
            if self._models is None:
                self._models = self._load_models()
            return self._models

    def available(self) -> list[str]:
        """Configured strategies that can run here."""
        if self._models is not None:
            usable = {SAMPLE, OPTIMISE}
            if self._models.steering is not None:
                usable.add(STEER)
            if not hasattr(self._models.estimator, "predict_tensor"):
                usable.discard(OPTIMISE)
        elif self._available is not None:
            usable = set(self._available())
        else:
            usable = set(STRATEGIES)
        return [s for s in self.settings.strategies if s in usable]

    def plans(self, target: Target, budget: float) -> list[Plan]:
        """Every available strategy's plan for ``target``, best first."""
        return plans(
            self.catalog.load_yields(),
            target.gender,
            target.minimum_age,
            target.maximum_age,
            budget=budget,
            available=self.available(),
            batch_sizes=self.settings.batch_sizes(),
        )

    def nearby(self, target: Target, limit: int = 5) -> list[dict[str, Any]]:
        """Filters near ``target`` the catalog can supply (``nearby_filters``)."""
        return nearby_filters(target, self.catalog, self.settings, self.available, limit)

    # --- serving ----------------------------------------------------------------------

    def supply(
        self, target: Target, *, charge: Callable[[], None] | None = None
    ) -> StoredFace | None:
        """A committed face matching ``target``, or None if the budget ran out.

        :raise Unreachable: no strategy is likely to succeed within the budget.
        :raise: whatever ``charge`` raises (the 429 of an exhausted generation budget);
            it is called only by the request that starts a generation run.
        """
        settings = self.settings
        catalog = self.catalog
        start = self.clock()
        deadline = start + settings.budget
        all_plans = self.plans(target, settings.budget)
        chosen = choose(all_plans, settings.min_success)
        if chosen is None:
            catalog.request_backfill(target, NOT_FOUND)
            logger.info(
                "on-demand: %s unreachable (%s)",
                target,
                ", ".join(f"{p.strategy} {p.success:.1%}" for p in all_plans) or "no strategy",
            )
            raise Unreachable(target, all_plans, self.nearby(target))
        key = target.key
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        face: StoredFace | None = None
        if catalog.claim(key, owner, settings.budget + CLAIM_TTL_EXTRA_SECONDS):
            face = self._claimed_run(key, owner, chosen, target, deadline, charge)
        else:
            catalog.wait(key, deadline + JOIN_GRACE_SECONDS, clock=self.clock)
            face = catalog.stored(target)
            # The run joined made nothing (its owner's budget was spent, or it failed):
            # that is the owner's answer, not this request's. With time left, this
            # request tries for itself, charged to its own budget (its own 429 if spent).
            if (
                face is None
                and self.clock() < deadline
                and catalog.claim(key, owner, settings.budget + CLAIM_TTL_EXTRA_SECONDS)
            ):
                face = self._claimed_run(key, owner, chosen, target, deadline, charge)
        elapsed = self.clock() - start
        if face is None:
            catalog.request_backfill(target, NOT_FOUND)
        elif elapsed > settings.slow_seconds:
            catalog.request_backfill(target, SLOW)
        logger.info(
            "on-demand %s: %s in %.2f s (%s)",
            key,
            f"face {face.id}" if face is not None else "nothing",
            elapsed,
            chosen.strategy,
        )
        return face

    def _claimed_run(
        self,
        key: str,
        owner: str,
        chosen: Plan,
        target: Target,
        deadline: float,
        charge: Callable[[], None] | None,
    ) -> StoredFace | None:
        """The claimant's part: re-check the catalog, charge, generate, finish the job."""
        catalog = self.catalog
        face: StoredFace | None = None
        try:
            face = catalog.stored(target)  # a run may have finished since our lookup
            if face is None:
                if charge is not None:
                    charge()
                catalog.mark_started(key, owner, chosen.strategy)
                face, _report = self.run(chosen, target, deadline, want=1)
        finally:
            catalog.finish(
                key,
                owner,
                face_id=face.id if face is not None else None,
                strategy=chosen.strategy,
            )
        return face

    # --- generation -------------------------------------------------------------------

    def run(
        self, plan: Plan, target: Target, deadline: float, *, want: int
    ) -> tuple[StoredFace | None, IngestReport | None]:
        """Generate with ``plan`` until ``want`` faces are admitted or the deadline nears.

        Returns the first face admitted and the run's report (None, None when the
        process's generation slot did not free up before the deadline).
        """
        if not self._run_lock.acquire(timeout=max(0.0, deadline - self.clock())):
            return None, None
        try:
            loading = self._models is None
            before = self.clock()
            models = self.models()
            if loading:
                # Loading the models (1.5-3 s on a CPU, once per process) is start-up, not
                # generation: the first request keeps its whole budget for generating.
                deadline += self.clock() - before
            if plan.strategy not in self.available():
                # Planned before the models were loaded, and this one failed to load
                # (e.g. no style directions for steering): take the next viable plan, if any.
                left = max(deadline - self.clock(), 0.0)
                fallback = choose(self.plans(target, left), self.settings.min_success)
                if fallback is None:
                    return None, None
                logger.info("on-demand: %s unavailable, using %s", plan.strategy, fallback.strategy)
                plan = fallback
            from ingest.ondemand.strategies import adapter_for, gates_for  # imports torch

            adapter = adapter_for(
                plan,
                target,
                models,
                deadline,
                optimise_steps=self.settings.optimise_steps,
                clock=self.clock,
            )
            batch = self._batch_size(plan, deadline)
            stop = threading.Event()
            admitted = 0
            last = self.clock()

            def progress(outcome: Any) -> None:
                # Stop when the next batch would end past the deadline, judging its length
                # by the batch just finished (the machine may be busier than measured).
                nonlocal admitted, last
                now = self.clock()
                took, last = now - last, now
                admitted += outcome.admitted
                if admitted < want and now + max(took, plan.cost * batch) > deadline:
                    stop.set()  # out of time: the run is interrupted

            with self.catalog.read() as view:
                self.index.refresh(view)
            budget_left = max(deadline - self.clock(), 0.0)
            count = min(MAX_RUN_CANDIDATES, max(batch, 2 * math.ceil(budget_left / plan.cost)))
            settings = dataclasses.replace(
                self.settings.ingest,
                batch_size=batch,
                overlap=False,
                curate=False,
                robust=False,
                gender_threshold=self.settings.gender_threshold,
            )
            report = run_ingest(
                count,
                generator=adapter,
                estimator=models.estimator,
                storage=self.storage,
                catalog=self.catalog,
                settings=settings,
                trigger="ondemand",
                stop=stop,
                progress=progress,
                gates=gates_for(
                    target,
                    models.estimator,
                    gender_threshold=self.settings.gender_threshold,
                    index=self.index,
                    duplicate_distance=self.settings.duplicate_distance,
                ),
                enough=lambda: admitted >= want,  # it got its face: the run completed
            )
            self._record(plan, target, adapter, report)
            face = self.catalog.stored(target, run_id=report.run_id) if report.admitted else None
            return face, report
        finally:
            self._run_lock.release()

    def _batch_size(self, plan: Plan, deadline: float) -> int:
        """A batch that takes at most a third of the time left (so the budget holds).

        Guarded optimisation keeps its configured batch: a smaller one would cost as long.
        """
        left = max(deadline - self.clock(), 0.0)
        configured = self.settings.batch_sizes()[plan.strategy]
        if plan.strategy in WHOLE_BATCHES:
            return configured
        fits = int(left / (3 * plan.cost)) if plan.cost > 0 else configured
        return max(1, min(configured, fits))

    def _record(self, plan: Plan, target: Target, adapter: Any, report: IngestReport) -> None:
        """Fold the run into the yield table (best effort: a failure is only logged)."""
        seconds = sum(
            report.timings.get(k, 0.0) for k in ("generation", "detection", "estimation", "gates")
        )
        if plan.strategy in TARGETED:
            updates = targeted_updates(adapter.aims, seconds, report.robust_passes)
        else:
            genders = (target.gender,) if target.gender else GENDERS
            updates = untargeted_updates(
                report.generated,
                seconds,
                report.robust_passes,
                genders,
                bands_within(target.minimum_age, target.maximum_age),
            )
        try:
            self.catalog.record_yields(plan.strategy, updates)
        except Exception:
            logger.warning("could not record on-demand yields", exc_info=True)

    # --- backfill ---------------------------------------------------------------------

    def run_backfill(self, limit: int = 3, stop: threading.Event | None = None) -> int:
        """Serve up to ``limit`` pending backfill requests; returns faces admitted.

        Each gets ``backfill_seconds`` with every available strategy (guarded
        optimisation, too slow for a request, is fine here) and stops after
        ``backfill_faces`` admissions. A filter no strategy is likely to reach even
        with that budget is marked ``unreachable`` until someone asks again.
        """
        total = 0
        for target in self.catalog.pending_backfills(limit):
            if stop is not None and stop.is_set():
                break
            budget = self.settings.backfill_seconds
            chosen = choose(self.plans(target, budget), self.settings.min_success)
            if chosen is None:
                self.catalog.settle_backfill(target.key, status=UNREACHABLE, admitted=0)
                logger.info("backfill %s: unreachable with %g s", target.key, budget)
                continue
            _face, report = self.run(
                chosen, target, self.clock() + budget, want=self.settings.backfill_faces
            )
            admitted = report.admitted if report is not None else 0
            total += admitted
            self.catalog.settle_backfill(
                target.key, status=FULFILLED if admitted else PENDING, admitted=admitted
            )
            logger.info(
                "backfill %s: %d faces admitted with %s", target.key, admitted, chosen.strategy
            )
        return total
