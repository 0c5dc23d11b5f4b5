"""Ingest end to end with the real DCGAN and face-api weights (small batch, CPU)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select

from analysis.estimators import load_estimator
from catalog.fsck import fsck
from catalog.services import find_service
from catalog.sql.admission import SqlIngestCatalog
from catalog.sql.models import Face, IngestRun
from catalog.storage import Storage
from ingest.generators import load_generator
from ingest.imaging import hamming, phash
from ingest.pipeline import run_ingest
from tests.factories import ingest_settings

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def models(models_dir: Path):  # type: ignore[no-untyped-def]
    """The real generator and estimator, on the CPU."""
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return (
        load_generator("dcgan", models_dir, device="cpu"),
        load_estimator("faceapi", models_dir, device="cpu"),
    )


def test_real_models_end_to_end(app, session_maker, models) -> None:  # type: ignore[no-untyped-def]
    generator, estimator = models
    storage = find_service(Storage, app)
    seeds = list(range(5000, 5048))
    report = run_ingest(
        48,
        generator=generator,
        estimator=estimator,
        storage=storage,
        catalog=SqlIngestCatalog(session_maker),
        settings=ingest_settings(batch_size=16),
        seeds=seeds,
    )
    assert report.status == "completed" and report.generated == 48
    assert report.generated == report.admitted + sum(report.rejected.values())
    # The DCGAN's faces are often ambiguous to the estimator (docs/operations.md, "Ingest"): some
    # are rejected for that, and most of the rest get in.
    assert 10 <= report.admitted <= 40 and report.rejected["gender_uncertain"] >= 5

    with session_maker() as session:
        faces = list(session.scalars(select(Face)))
        run = session.get(IngestRun, report.run_id)
    assert len(faces) == report.admitted == run.admitted
    assert run.generator == "dcgan" and run.device == "cpu"

    latents = generator.sample_latents([f.seed for f in faces])
    native = generator.generate(latents).numpy()
    again = estimator.predict(native)
    for face, image, age, p in zip(faces, native, again.age, again.p_female, strict=True):
        assert face.generator_checksum == generator.checksum and face.estimator == "faceapi"
        assert face.native_size == 64 and face.seed in seeds
        assert face.gender == ("female" if p > 0.5 else "male")
        assert max(p, 1 - p) >= app.config["GENDER_THRESHOLD"]
        assert face.age == round(float(age)) and 0 <= face.age <= 100
        # The seed and stored latent remake the face: provenance is enough to re-render.
        np.testing.assert_array_equal(face.latent_vector, latents[faces.index(face)].numpy())
        original = Image.open(io.BytesIO(storage.get(face.image_key))).convert("RGB")
        assert original.size == (256, 256)
        assert Image.open(io.BytesIO(storage.get(face.thumb_key))).size == (128, 128)
        back = np.asarray(original.resize((64, 64), Image.Resampling.BOX))[None]
        assert hamming(phash(back), np.array([face.phash]))[0] <= 6
        assert face.phash == int(phash(image[None])[0])
    assert fsck(session_maker, storage).clean
