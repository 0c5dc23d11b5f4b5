"""On-demand generation: strategy choice, immediate 404s, admission, budget, single flight.

Fast tests run the real engine, pipeline, gates, database and storage around the fakes of
``tests.ingest.robust_fakes`` (verdicts that survive augmentation unless marked brittle),
so each test decides what fraction of candidates reaches a cell. One test runs the real
weights end to end through the Flask test client.
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import func, select

from analysis.types import AgeGenderBatch
from catalog.errors import ApiError
from catalog.services import find_service, install_service
from catalog.sql import flight
from catalog.sql.admission import SqlIngestCatalog
from catalog.sql.cells import verify_cells
from catalog.sql.db import session_factory
from catalog.sql.models import BackfillRequest, CellYield, Face, IngestRun, OndemandJob
from catalog.sql.ondemand import SqlOndemandCatalog
from catalog.sql.yields import record_yields
from catalog.storage import Storage
from ingest.ondemand.engine import OnDemand
from ingest.ondemand.models import ModelSet
from ingest.ondemand.ports import FULFILLED, NOT_FOUND, PENDING, FaceSupplier, Target
from ingest.ondemand.yields import (
    MIN_COST_SAMPLES,
    OPTIMISE,
    PRIOR_PASSED,
    PRIOR_TRIED,
    SAMPLE,
    STEER,
    Counts,
    YieldTable,
    choose,
    plans,
)
from ingest.robust_gates import NOT_ROBUST
from tests.factories import ingest_settings, ondemand_settings
from tests.ingest.robust_fakes import Face as FakeFace
from tests.ingest.robust_fakes import RobustFakeEstimator, RobustFakeGenerator, mix

FEMALE_40S = Target("female", 40, 49)
COMMON = FakeFace(25, 0.05)  # a young man: most of what the fake generator makes


def make_engine(
    app: Flask,
    generator: RobustFakeGenerator,
    estimator: RobustFakeEstimator | None = None,
    **overrides: Any,
) -> OnDemand:
    """An engine on the app's database and storage with fake models, installed in the app."""
    values: dict[str, Any] = {
        "budget": 3.0,
        "strategies": (SAMPLE,),
        "batch_size": 16,
        "slow_seconds": 60.0,
        "ingest": ingest_settings(upload_backoff=0.0),
        **overrides,
    }
    models = ModelSet(generator, estimator or RobustFakeEstimator())  # type: ignore[arg-type]
    engine = OnDemand(
        settings=ondemand_settings(**values),
        catalog=SqlOndemandCatalog(session_factory(app)),
        storage=find_service(Storage, app),
        models=lambda: models,
        available=lambda: [SAMPLE],
    )
    install_service(app, FaceSupplier, engine)
    # The fakes cost milliseconds a candidate, not the photoreal prior's 0.3 s: say so in
    # the yield table (on a cell no test asks for), or a run would plan a handful of
    # candidates where the tests expect it to keep trying for its whole budget.
    with session_factory(app)() as session:
        counts = Counts(tried=MIN_COST_SAMPLES, passed=0, seconds=0.01 * MIN_COST_SAMPLES)
        record_yields(session, SAMPLE, {("male", (80, 89)): counts})
        session.commit()
    return engine


class EstimateClock(RobustFakeEstimator):
    """The fake estimator, and a clock that only moves when it estimates (``seconds``
    each): an engine on ``now`` spends its budget in estimates, not in wall time."""

    def __init__(self, seconds: float = 0.3) -> None:
        super().__init__()
        self.seconds = seconds
        self.time = 0.0

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        self.time += self.seconds
        return super().predict(images)

    def now(self) -> float:
        return self.time


def seed_yield(app: Flask, strategy: str, gender: str, band: tuple[int, int], **counts: float):  # type: ignore[no-untyped-def]
    with session_factory(app)() as session:
        record_yields(session, strategy, {(gender, band): Counts(**counts)})
        session.commit()


def faces(app: Flask) -> list[Face]:
    with session_factory(app)() as session:
        return list(session.scalars(select(Face).order_by(Face.id)))


# --- strategy choice (pure) --------------------------------------------------------------


def table(rows: dict[tuple[str, str, int], tuple[float, float, float]]) -> YieldTable:
    return YieldTable({k: Counts(*v) for k, v in rows.items()})


def test_prior_is_optimistic_but_bounded_and_learned() -> None:
    empty = table({})
    assert empty.rate(SAMPLE, "female", 40, 49) == pytest.approx(PRIOR_PASSED / PRIOR_TRIED)
    failed = table({(SAMPLE, "female", 40): (4000, 0, 40.0)})
    assert failed.rate(SAMPLE, "female", 40, 49) < 0.001
    measured = table({(SAMPLE, "female", 40): (4000, 56, 40.0)})
    assert measured.rate(SAMPLE, "female", 40, 49) == pytest.approx(57 / 4020)
    # A filter covering half of a band gets half its rate; either gender adds both.
    assert measured.rate(SAMPLE, "female", 40, 44) == pytest.approx(57 / 4020 / 2)
    both = table({(SAMPLE, "female", 40): (4000, 56, 40.0), (SAMPLE, "male", 40): (4000, 96, 40)})
    assert both.rate(SAMPLE, None, 40, 49) == pytest.approx(57 / 4020 + 97 / 4020)
    assert measured.cost(SAMPLE) == pytest.approx(0.01)


def test_choice_goes_by_expected_time_and_refuses_hopeless_cells() -> None:
    rows = {
        (SAMPLE, "female", 40): (10000, 100, 100.0),  # 1% at 10 ms
        (STEER, "female", 40): (1000, 300, 20.0),  # 30% at 20 ms
        (OPTIMISE, "female", 40): (100, 60, 170.0),  # 60% at 1.7 s
        (SAMPLE, "female", 60): (10000, 0, 100.0),
        (STEER, "female", 60): (10000, 0, 200.0),
        (OPTIMISE, "female", 60): (100, 3, 170.0),  # reachable, but not in 4 s
    }
    sizes = {SAMPLE: 32, STEER: 32, OPTIMISE: 8}
    options = plans(
        table(rows),
        "female",
        40,
        49,
        budget=4.0,
        available=[SAMPLE, STEER, OPTIMISE],
        batch_sizes=sizes,
    )
    assert [p.strategy for p in options][:2] == [STEER, SAMPLE]
    assert choose(options, 0.1).strategy == STEER
    without = plans(
        table(rows), "female", 40, 49, budget=4.0, available=[SAMPLE], batch_sizes=sizes
    )
    assert choose(without, 0.1).strategy == SAMPLE
    old = plans(
        table(rows),
        "female",
        60,
        69,
        budget=4.0,
        available=[SAMPLE, STEER, OPTIMISE],
        batch_sizes=sizes,
    )
    assert choose(old, 0.1) is None
    # With the worker's minute the guarded optimiser becomes the way to that cell.
    slow = plans(
        table(rows),
        "female",
        60,
        69,
        budget=60.0,
        available=[SAMPLE, STEER, OPTIMISE],
        batch_sizes=sizes,
    )
    assert choose(slow, 0.1).strategy == OPTIMISE


# --- the engine with fakes ---------------------------------------------------------------


def test_serves_first_pass_and_admits_every_passing_candidate(app: Flask) -> None:
    generator = RobustFakeGenerator(mix((0.25, FakeFace(44.0, 0.95)), (0.75, COMMON)))
    engine = make_engine(app, generator)
    face = engine.supply(FEMALE_40S)
    assert face is not None and face.gender == "female" and 40 <= face.age <= 49
    stored = faces(app)
    assert face.id in {f.id for f in stored}
    # Every stored face passed the robust check for the filter; none of the common faces
    # (which pass every gate but the filter) was admitted.
    assert stored and all(f.gender == "female" and 40 <= f.age <= 49 for f in stored)
    with session_factory(app)() as session:
        run = session.scalars(select(IngestRun).where(IngestRun.trigger == "ondemand")).one()
        assert run.admitted == len(stored) == run.generated - sum(run.rejected.values())
        assert run.rejected.get("off_target", 0) > 0
        assert verify_cells(session) == []
        # The run taught the yield table about the cell it could observe.
        row = session.get(CellYield, (SAMPLE, "female", 40))
        assert row.tried == run.generated and row.passed == len(stored) and row.seconds > 0
        assert session.get(CellYield, (SAMPLE, "male", 20)) is None
    # The next request for the filter is served from the catalog.
    assert engine.catalog.stored(FEMALE_40S) is not None


def test_robust_gate_rejects_faces_that_pass_only_unaugmented(app: Flask) -> None:
    brittle = FakeFace(30.0, 0.95, brittle=True)  # plain verdict 45, robust verdict 30
    generator = RobustFakeGenerator(lambda seed: brittle)
    engine = make_engine(app, generator, budget=1.0)
    assert engine.supply(FEMALE_40S) is None
    assert faces(app) == []
    with session_factory(app)() as session:
        run = session.scalars(select(IngestRun)).one()
        # They passed the plain-verdict prefilter and fell only to the robust gate.
        assert set(run.rejected) == {NOT_ROBUST} and run.generated > 0
        assert session.get(CellYield, (SAMPLE, "female", 40)).passed == 0
        request = session.get(BackfillRequest, "female:40-49")
        assert request.reason == NOT_FOUND and request.status == PENDING


def test_budget_is_respected(app: Flask) -> None:
    generator = RobustFakeGenerator(lambda seed: COMMON)
    # 0.1 s per estimator call, nothing ever passes: the run must stop by the deadline.
    engine = make_engine(app, generator, RobustFakeEstimator(delay=0.1), budget=1.5)
    started = time.monotonic()
    assert engine.supply(FEMALE_40S) is None
    elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 1.5 + 0.6, elapsed
    assert generator.generated > 0


def test_hopeless_filter_404s_at_once_with_nearby_filters(app: Flask, client, make_face) -> None:  # type: ignore[no-untyped-def]
    generator = RobustFakeGenerator(lambda seed: COMMON)
    make_engine(app, generator, budget=4.0)
    seed_yield(app, SAMPLE, "female", (60, 69), tried=20000, passed=0, seconds=200.0)
    seed_yield(app, SAMPLE, "female", (50, 59), tried=20000, passed=50, seconds=200.0)
    make_face(gender="female", age=52)
    started = time.monotonic()
    response = client.get("/face/json?gender=female&minimum_age=60&maximum_age=69")
    assert time.monotonic() - started < 1.0
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "no_match" and body["reason"] == "unreachable"
    assert "cannot currently supply" in body["detail"]
    assert body["filters"] == {"gender": "female", "minimum_age": 60, "maximum_age": 69}
    assert body["nearby"][0] == {
        "gender": "female",
        "minimum_age": 50,
        "maximum_age": 59,
        "stored": 1,
        "on_demand": True,
    }
    assert all(n != {"gender": "female", "minimum_age": 60} for n in body["nearby"])
    assert generator.generated == 0  # nothing was generated for a hopeless cell
    with session_factory(app)() as session:
        assert session.get(BackfillRequest, "female:60-69").requests == 1


def test_reachable_filter_through_the_api(app: Flask, client) -> None:  # type: ignore[no-untyped-def]
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    make_engine(app, generator)
    response = client.get("/face/json?gender=female&minimum_age=40&maximum_age=49")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["gender"] == "female" and 40 <= body["age"] <= 49
    assert body["source"] == "fakerobust"
    assert client.get(f"/api/v1/faces/{body['id']}").status_code == 200


def test_charge_only_the_run_owner_and_release_on_429(app: Flask) -> None:
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    engine = make_engine(app, generator)

    def refuse() -> None:
        raise ApiError(429, "throttled", "Request was throttled. Expected available in 5 s.")

    with pytest.raises(ApiError) as caught:
        engine.supply(FEMALE_40S, charge=refuse)
    assert caught.value.status == 429 and generator.generated == 0
    with session_factory(app)() as session:
        assert session.get(OndemandJob, "female:40-49").status == flight.FAILED
    charges: list[int] = []
    assert engine.supply(FEMALE_40S, charge=lambda: charges.append(1)) is not None
    assert charges == [1]
    # The filter is now stored: a later unmet-path call finds it without charging.
    assert engine.supply(FEMALE_40S, charge=lambda: charges.append(1)) is not None
    assert charges == [1]


def test_single_flight_between_threads(app: Flask) -> None:
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    engine = make_engine(app, generator, RobustFakeEstimator(delay=0.3), budget=5.0)
    n = 8
    barrier = threading.Barrier(n)
    results: list[Face | None] = [None] * n
    charges: list[int] = []
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            barrier.wait()
            results[i] = engine.supply(FEMALE_40S, charge=lambda: charges.append(i))
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert all(face is not None and 40 <= face.age <= 49 for face in results)
    assert flight.job_runs(session_factory(app), "female:40-49") == 1
    assert len(charges) == 1
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(IngestRun)) == 1


def test_stale_claim_is_taken_over(app: Flask) -> None:
    factory = session_factory(app)
    assert flight.claim(factory, "female:40-49", "dead-process", ttl=-1.0)
    assert not flight.claim(factory, "male:0-9", "a", ttl=60) or True  # unrelated key
    assert flight.claim(factory, "female:40-49", "next", ttl=60)
    assert not flight.claim(factory, "female:40-49", "third", ttl=60)


def test_backfill_fills_requested_cells(app: Flask) -> None:
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    engine = make_engine(app, generator, backfill_seconds=5.0, backfill_faces=5)
    flight.request_backfill(session_factory(app), "female", 40, 49, NOT_FOUND)
    admitted = engine.run_backfill()
    assert admitted >= 5 and len(faces(app)) == admitted
    with session_factory(app)() as session:
        request = session.get(BackfillRequest, "female:40-49")
        assert request.status == FULFILLED and request.admitted == admitted


def test_ingest_uses_the_robust_gate(app: Flask, session_maker) -> None:  # type: ignore[no-untyped-def]
    from ingest.pipeline import run_ingest

    generator = RobustFakeGenerator(
        mix((0.5, FakeFace(30.0, 0.95, brittle=True)), (0.5, FakeFace(33.0, 0.05)))
    )
    report = run_ingest(
        24,
        generator=generator,
        estimator=RobustFakeEstimator(brittle_age=70.0),
        storage=find_service(Storage, app),
        catalog=SqlIngestCatalog(session_maker),
        settings=ingest_settings(batch_size=8, upload_backoff=0.0, robust=True),
        trigger="test",
    )
    assert report.rejected[NOT_ROBUST] > 0  # plain verdict 70, median 30: a decade apart
    stored = faces(app)
    assert stored and all(f.gender == "male" and f.age == 33 for f in stored)
    assert report.robust_checked == 24 and report.robust_passes[("male", 33)] == len(stored)


# --- single flight across processes (PostgreSQL) -------------------------------------------


def _process_request(url: str, objects: str, start_at: float, queue: Any) -> None:
    """A separate process: build the app and a fake engine, then ask at ``start_at``."""
    from app import create_app

    app = create_app({"TESTING": True, "DATABASE_URL": url, "STORAGE_URL": objects})
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    engine = make_engine(app, generator, RobustFakeEstimator(delay=0.5), budget=6.0)
    time.sleep(max(0.0, start_at - time.time()))
    face = engine.supply(FEMALE_40S)
    queue.put((face.id if face is not None else None, generator.generated))


@pytest.mark.postgres
def test_single_flight_between_processes(app: Flask, tmp_path: Path) -> None:
    url = app.config["DATABASE_URL"]
    if not url.startswith("postgresql"):
        pytest.skip("two processes on one SQLite file are covered by the thread test")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + 8.0  # after both have imported torch and built their app
    processes = [
        context.Process(
            target=_process_request, args=(url, app.config["STORAGE_URL"], start_at, queue)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert all(face_id is not None for face_id, _ in results)
    assert sorted(generated > 0 for _, generated in results) == [False, True]
    assert flight.job_runs(session_factory(app), "female:40-49") == 1


# --- the real weights, end to end ---------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize(
    "generator",
    # The default (photoreal) generator, and the legacy 64 px DCGAN named explicitly.
    [None, "dcgan"],
    ids=["default", "dcgan"],
)
def test_real_models_fill_an_unmet_reachable_filter(  # type: ignore[no-untyped-def]
    app_factory, models_dir: Path, generator: str | None
) -> None:
    app = app_factory(
        MODELS_DIR=str(models_dir),
        DEVICE="cpu",
        TORCH_THREADS=2,
        ONDEMAND_BUDGET_SECONDS=20.0,
        ONDEMAND_STRATEGIES="sample",
        **({"GENERATOR": generator} if generator else {}),
    )
    source = app.config["GENERATOR"]
    assert source == (generator or "mobilestylegan")
    if not (models_dir / source).exists():
        pytest.skip(f"no model weights in {models_dir} (run `facecat models fetch`)")
    # The budget is counted in looks at the clock (one "second" each, about one per
    # batch), not in wall time: on a busy machine a wall-clock budget ran out before the
    # 1-in-10 face came, and the test failed for the machine's sake.
    ticks = itertools.count()
    find_service(FaceSupplier, app).clock = lambda: float(next(ticks))
    client = app.test_client()
    response = client.get("/face/json?gender=male&minimum_age=30&maximum_age=39")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["gender"] == "male" and 30 <= body["age"] <= 39 and body["source"] == source
    assert body["gender_confidence"] >= app.config["GENDER_THRESHOLD"]
    assert client.get(f"/api/v1/faces/{body['id']}").status_code == 200
    image = client.get(body["image_url"].replace("http://facecat.test", ""))
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    # The next request for the filter is served from the catalog, without generating.
    again = client.get("/face/json?gender=male&minimum_age=30&maximum_age=39")
    assert again.status_code == 200
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(IngestRun)) == 1


def test_worker_backfills_before_ingest_even_when_full() -> None:
    from ingest.scheduling import IngestWorker

    calls: list[str] = []
    worker = IngestWorker(
        lambda stop: calls.append("ingest"),  # type: ignore[arg-type,return-value]
        interval_seconds=3600,
        is_full=lambda: True,
        backfill=lambda stop: calls.append("backfill"),
    )
    worker.job()
    assert calls == ["backfill"]  # the bands are full, but users' asks still get served


def test_measure_yields_command_records_measured_rows(app: Flask, runner, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ingest.ondemand import models as models_module

    generator = RobustFakeGenerator(mix((0.25, FakeFace(44.0, 0.95)), (0.75, COMMON)))
    models = ModelSet(generator, RobustFakeEstimator())  # type: ignore[arg-type]
    monkeypatch.setattr(models_module, "load_model_set", lambda config: models)
    result = runner.invoke(
        args=["ingest", "measure-yields", "--strategies", "sample", "--samples", "64"]
    )
    assert result.exit_code == 0, result.output
    with session_factory(app)() as session:
        female = session.get(CellYield, (SAMPLE, "female", 40))
        male = session.get(CellYield, (SAMPLE, "male", 20))
        empty = session.get(CellYield, (SAMPLE, "female", 60))
    assert female.tried == male.tried == empty.tried == 64
    assert female.passed + male.passed == 64 and 4 <= female.passed <= 30
    assert empty.passed == 0 and female.seconds > 0
    assert "| sample | female | 40-49 | 64 |" in result.output
    args = ["ingest", "measure-yields", "--strategies", "sample", "--samples", "32"]
    assert runner.invoke(args=args).exit_code == 0  # adds up
    with session_factory(app)() as session:
        assert session.get(CellYield, (SAMPLE, "male", 20)).tried == 96
    assert runner.invoke(args=[*args, "--reset"]).exit_code == 0  # starts over
    with session_factory(app)() as session:
        assert session.get(CellYield, (SAMPLE, "male", 20)).tried == 32


# --- guarded optimisation with a tiny differentiable fake -----------------------------------


class _DiffGenerator:
    """Latent (age offset, gender offset, 2 texture dims) → face; differentiable."""

    name = "diff"
    checksum = "d" * 64
    latent_dim = 4
    native_size = 64

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")
        grid = torch.linspace(0, 6.28, 64)
        self.texture = 60 + 25 * torch.sin(grid)[:, None] * torch.cos(grid)[None, :]

    def sample_latents(self, seeds):  # type: ignore[no-untyped-def]
        import numpy as np
        import torch

        rows = [np.random.default_rng(int(s)).standard_normal(4) for s in seeds]
        return torch.tensor(np.array(rows), dtype=torch.float32)

    def render(self, latents):  # type: ignore[no-untyped-def]
        import torch

        age = 30 + 10 * latents[:, 0]
        female = 50 + 40 * latents[:, 1]
        t = self.texture[None] + latents[:, 2:3, None] * 5
        return torch.stack([t + age[:, None, None], t + female[:, None, None], t], dim=-1)

    def generate(self, latents, batch_size=256):  # type: ignore[no-untyped-def]
        import torch

        with torch.inference_mode():
            return self.render(latents).round().clamp(0, 255).to(torch.uint8)


class _DiffEstimator(RobustFakeEstimator):
    def predict_tensor(self, images):  # type: ignore[no-untyped-def]
        centre = images[:, 16:48, 16:48, :]
        age = (centre[..., 0] - centre[..., 2]).mean(dim=(1, 2))
        p = ((centre[..., 1] - centre[..., 2]).mean(dim=(1, 2)) / 100).clamp(0, 1)
        return age, p


def test_guided_optimiser_moves_latents_into_the_cell_under_augmentation() -> None:
    from analysis.robust import cell_match, robust_predict
    from ingest.ondemand.strategies import GuidedOptimiser

    generator, estimator = _DiffGenerator(), _DiffEstimator()
    seeds = list(range(8))
    before = robust_predict(estimator, generator.generate(generator.sample_latents(seeds)).numpy())
    optimiser = GuidedOptimiser(generator, estimator, "female", 40, 49, steps=60, lr=0.15)  # type: ignore[arg-type]
    latents = optimiser.sample_latents(seeds)
    after = robust_predict(estimator, generator.generate(latents).numpy())
    hit_before = cell_match(before, "female", (40, 49), 0.8).mean()
    hit_after = cell_match(after, "female", (40, 49), 0.8).mean()
    assert hit_before < 0.2 and hit_after >= 0.75, (hit_before, hit_after)
    assert optimiser.name == "diff-guided" and sum(optimiser.aims.values()) == 8
    # The prior keeps the latents typical: no coordinate runs off to extreme values.
    assert float(latents.abs().max()) < 6.0


def test_lookup_fills_draw_on_the_server_capacity_not_the_callers_budget(
    app_factory: Callable[..., Flask],
) -> None:
    """An anonymous caller (an ``<img>``: it cannot send a key) gets faces made on demand
    without spending its generation budget; once the server's fill capacity is in use, an
    unmet lookup answers 503 with Retry-After, never a 429."""
    from catalog.access.budgets import generation_budget
    from catalog.access.keys import ANONYMOUS

    app = app_factory(RATELIMIT_ONDEMAND_FILLS="2/minute")
    generator = RobustFakeGenerator(
        mix((0.3, FakeFace(45.0, 0.95)), (0.3, FakeFace(55.0, 0.05)), (0.4, COMMON))
    )
    make_engine(app, generator)
    client = app.test_client()
    url = "/face/json?gender={}&minimum_age={}&maximum_age={}"
    assert client.get(url.format("female", 40, 49)).status_code == 200  # one fill
    assert client.get(url.format("female", 40, 49)).status_code == 200  # stored: no fill
    # A second fill for the same anonymous caller: its 1/minute generation budget is not used.
    assert client.get(url.format("male", 50, 59)).status_code == 200
    made = generator.generated
    busy = client.get(url.format("female", 40, 44))  # unmet: the stored women are 45
    assert busy.status_code == 503, busy.get_json()
    assert busy.get_json()["error"] == "fill_capacity" and "Retry-After" in busy.headers
    assert "capacity for making faces on demand" in busy.get_json()["detail"]
    assert generator.generated == made  # refused before generating
    with app.test_request_context():
        assert [remaining for _, remaining in generation_budget(ANONYMOUS)] == [1, 60]


def test_a_strategy_that_fails_to_load_falls_back_to_the_next(app: Flask) -> None:
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    engine = make_engine(app, generator, strategies=(SAMPLE, STEER))
    engine._available = lambda: [SAMPLE, STEER]  # its directions file looked fine
    # Sampling measured at 2% and 0.3 s a candidate (15 s to a face, still an 18% chance
    # in 3 s): the unmeasured steer's prior (5% at 0.35 s: 7 s to a face) wins the plan.
    seed_yield(app, SAMPLE, "female", (40, 49), tried=1000, passed=20, seconds=300.0)
    assert choose(engine.plans(FEMALE_40S, 3.0), 0.1).strategy == STEER
    face = engine.supply(FEMALE_40S)  # the models load without directions: sampling serves
    assert face is not None and face.generator == "fakerobust"
    assert engine.available() == [SAMPLE]


def test_loading_the_models_does_not_eat_the_first_requests_budget(app: Flask) -> None:
    now = [0.0]
    generator = RobustFakeGenerator(lambda seed: COMMON)  # never a woman in her 40s
    models = ModelSet(generator, RobustFakeEstimator())  # type: ignore[arg-type]

    def slow_load() -> ModelSet:
        now[0] += 10.0  # longer than the whole 3 s budget (the clock is frozen otherwise)
        return models

    engine = make_engine(app, generator)
    engine._load_models = slow_load
    engine.clock = lambda: now[0]
    assert engine.supply(FEMALE_40S) is None
    # The budget started after loading: the run went on past its first batch of 16.
    assert generator.generated > 16


def test_guided_optimiser_stops_stepping_at_the_deadline() -> None:
    from ingest.ondemand.strategies import GuidedOptimiser

    ticks = iter(range(100))
    optimiser = GuidedOptimiser(
        _DiffGenerator(),  # type: ignore[arg-type]
        _DiffEstimator(),  # type: ignore[arg-type]
        "female",
        40,
        49,
        steps=50,
        deadline=3.0,
        clock=lambda: float(next(ticks)),
    )
    latents = optimiser.sample_latents([1, 2])
    assert optimiser.steps_run == 3 and latents.shape == (2, 4)


def test_ingest_runs_feed_the_sample_yields(app: Flask) -> None:
    from ingest.cli import ingest_once

    generator = RobustFakeGenerator(mix((0.25, FakeFace(44.0, 0.95)), (0.75, COMMON)))
    report = ingest_once(
        app,
        32,
        generator=generator,  # type: ignore[arg-type]
        estimator=RobustFakeEstimator(),  # type: ignore[arg-type]
        settings=ingest_settings(batch_size=16, upload_backoff=0.0, robust=True),
        trigger="test",
    )
    with session_factory(app)() as session:
        female = session.get(CellYield, (SAMPLE, "female", 40))
        male = session.get(CellYield, (SAMPLE, "male", 20))
        old = session.get(CellYield, (SAMPLE, "male", 60))
    assert female.tried == male.tried == old.tried == report.generated == 32
    assert female.passed + male.passed == report.robust_checked > 0 and old.passed == 0
    plain = ingest_once(
        app,
        8,
        generator=generator,  # type: ignore[arg-type]
        estimator=RobustFakeEstimator(),  # type: ignore[arg-type]
        settings=ingest_settings(batch_size=8, upload_backoff=0.0),
        trigger="test",
    )
    assert plain.robust_checked == 0
    with session_factory(app)() as session:  # a run without the robust gate teaches nothing
        assert session.get(CellYield, (SAMPLE, "male", 60)).tried == 32


def test_steering_does_not_plan_past_its_reach() -> None:
    rows = {(SAMPLE, "female", 90): (2048, 0, 200.0)}  # sampling never got there either
    sizes = {SAMPLE: 4, STEER: 4}
    beyond = plans(
        table(rows), "female", 90, 100, budget=4.0, available=[SAMPLE, STEER], batch_sizes=sizes
    )
    assert [p.strategy for p in beyond] == [SAMPLE]
    assert choose(beyond, 0.1) is None  # an honest 404 at once
    within = plans(
        table(rows), "female", 85, 95, budget=4.0, available=[SAMPLE, STEER], batch_sizes=sizes
    )
    assert STEER in [p.strategy for p in within]


@pytest.mark.parametrize("joiner_has_budget", [True, False])
def test_a_joiner_gets_its_own_answer_when_the_run_it_joined_made_nothing(
    app: Flask, joiner_has_budget: bool
) -> None:
    """The claimant's budget is spent (its charge raises 429) while another request waits
    on its run: the joiner does not inherit a 404, it tries itself, charged to its own
    budget: a face if it has budget, its own 429 if not."""
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    clock = EstimateClock()
    engine = make_engine(app, generator, clock, budget=5.0)
    engine.clock = clock.now
    claimed, joiner_waiting = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}
    real_wait = engine.catalog.wait

    def waiting(*args: Any, **kwargs: Any) -> None:
        joiner_waiting.set()  # the joiner is inside its wait on the owner's run
        real_wait(*args, **kwargs)

    engine.catalog.wait = waiting  # type: ignore[method-assign]

    def owner_charge() -> None:
        claimed.set()
        assert joiner_waiting.wait(30)
        raise ApiError(429, "throttled", "Request was throttled. Expected available in 5 s.")

    joiner_charges: list[int] = []

    def joiner_charge() -> None:
        joiner_charges.append(1)
        if not joiner_has_budget:
            raise ApiError(429, "throttled", "Request was throttled. Expected available in 9 s.")

    def call(name: str, charge: Any) -> None:
        try:
            outcome[name] = engine.supply(FEMALE_40S, charge=charge)
        except ApiError as error:
            outcome[name] = error

    owner = threading.Thread(target=call, args=("owner", owner_charge))
    owner.start()
    assert claimed.wait(5)
    joiner = threading.Thread(target=call, args=("joiner", joiner_charge))
    joiner.start()
    owner.join(30)
    joiner.join(30)
    assert isinstance(outcome["owner"], ApiError) and outcome["owner"].status == 429
    assert joiner_charges == [1]
    if joiner_has_budget:
        face = outcome["joiner"]
        assert face is not None and not isinstance(face, ApiError) and 40 <= face.age <= 49
    else:
        assert isinstance(outcome["joiner"], ApiError) and outcome["joiner"].status == 429
        assert "9 s" in outcome["joiner"].detail and generator.generated == 0


def test_an_on_demand_run_that_got_its_face_is_recorded_completed(app: Flask) -> None:
    generator = RobustFakeGenerator(mix((0.3, FakeFace(45.0, 0.95)), (0.7, COMMON)))
    engine = make_engine(app, generator)
    assert engine.supply(FEMALE_40S) is not None
    with session_factory(app)() as session:
        (run,) = session.scalars(select(IngestRun)).all()
    assert run.trigger == "ondemand" and run.status == "completed" and run.admitted >= 1


def test_an_on_demand_run_out_of_time_is_recorded_interrupted(app: Flask) -> None:
    """Each estimate costs 0.3 s of a clock the test controls, so a 1 s budget ends the
    run after three batches of its planned candidates, on any machine."""
    generator = RobustFakeGenerator(lambda seed: COMMON)  # never a woman in her 40s
    clock = EstimateClock()
    engine = make_engine(app, generator, clock, budget=1.0)
    engine.clock = clock.now
    assert engine.supply(FEMALE_40S) is None
    with session_factory(app)() as session:
        (run,) = session.scalars(select(IngestRun)).all()
    assert run.status == "interrupted" and run.admitted == 0 and generator.generated > 0
