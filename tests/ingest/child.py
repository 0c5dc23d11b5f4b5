"""A separate ingest process with the fake models, for tests that kill or signal it.

``python -m tests.ingest.child --database URL --storage DIR [options]`` runs one ingest
(or, with ``--worker``, the scheduled worker). ``--pause-after-puts N --marker PATH``
makes the Nth upload write PATH and then hang, so the test knows the process is in the
middle of a batch (objects uploaded, rows not yet committed) when it kills it.
``--go PATH`` waits for PATH to exist before starting, to line up concurrent children.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from catalog.sql.admission import SqlIngestCatalog
from catalog.sql.db import make_engine
from catalog.storage.local import LocalStorage
from ingest.pipeline import run_ingest
from ingest.scheduling import IngestWorker
from tests.factories import ingest_settings
from tests.ingest.fakes import FakeEstimator, FakeGenerator, FaultyStorage


def main(argv: list[str]) -> int:
    """Parse the options, run, print the report's counts as JSON on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--composition", type=json.loads, default=None)
    parser.add_argument("--target-size", type=int, default=20000)
    parser.add_argument("--pause-after-puts", type=int, default=None)
    parser.add_argument("--marker", type=Path, default=None)
    parser.add_argument("--go", type=Path, default=None)
    parser.add_argument("--estimator-delay", type=float, default=0.0)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--interval", type=float, default=3600)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    engine = make_engine(args.database)
    session_maker = sessionmaker(engine, expire_on_commit=False)
    storage = FaultyStorage(LocalStorage(args.storage))
    if args.pause_after_puts is not None:

        def pause(count: int) -> None:
            if count == args.pause_after_puts:
                args.marker.write_text("uploading")
                time.sleep(600)  # until the test kills us

        storage.on_put = pause
    settings = ingest_settings(
        batch_size=args.batch,
        composition=args.composition,
        target_size=args.target_size,
        upload_backoff=0.0,
    )
    estimator = FakeEstimator(delay=args.estimator_delay)
    if args.go is not None:
        while not args.go.exists():
            time.sleep(0.01)

    def once(stop):  # type: ignore[no-untyped-def]
        return run_ingest(
            args.count,
            generator=FakeGenerator(),
            estimator=estimator,
            storage=storage,
            catalog=SqlIngestCatalog(session_maker),
            settings=settings,
            trigger="worker" if args.worker else "test",
            stop=stop,
        )

    if args.worker:
        if args.marker is not None:
            # Tell the test the first batch is being estimated, i.e. a run is under way.
            original = estimator.predict

            def predict(images):  # type: ignore[no-untyped-def]
                args.marker.write_text("estimating")
                return original(images)

            estimator.predict = predict  # type: ignore[method-assign]
        return IngestWorker(once, interval_seconds=args.interval).run()
    report = once(None)
    print(json.dumps({"status": report.status, "admitted": report.admitted, "run": report.run_id}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
