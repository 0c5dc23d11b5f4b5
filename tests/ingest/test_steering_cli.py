"""``facecat ingest fit-directions`` and ``calibrate-steering`` end to end, on small models.

The generator is a small random MobileStyleGAN (``tests.catalog.studio_fakes``) whose
32 px frames no cascade finds a face in, so the framer's detector is a stub that reports
one centred face (the framing logic itself is ``tests/analysis/test_framing.py``'s). The
estimator reads age and gender from the crop's mean colour, a function of the style the
fit can learn and an edit can move, as a real estimator's verdict is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ingest.command_models
from analysis.framing import FaceFramer
from analysis.types import AgeGenderBatch, Detection
from ingest.generators.photoreal import PhotorealGenerator
from ingest.steering import Steering
from tests.catalog import studio_fakes


class CentredFace:
    """A detector that always finds one face filling the middle 60% of the frame."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        size = image.shape[0]
        return [Detection(int(size * 0.2), int(size * 0.2), int(size * 0.6), int(size * 0.6), 9.0)]


class ColourEstimator:
    """Age from the crops' mean red (0..255 → 0..100 years), p(female) from mean green."""

    name = "colour"
    checksum = "c" * 64
    device = torch.device("cpu")

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        mean = np.asarray(images, np.float32).mean(axis=(1, 2))
        return AgeGenderBatch(mean[:, 0] / 2.55, mean[:, 1] / 255.0)


@pytest.fixture
def small_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PhotorealGenerator:
    """The commands load a small random generator with a stub framer, and the estimator."""
    base = studio_fakes.small_generator(studio_fakes.random_weights(tmp_path / "weights"))
    generator = PhotorealGenerator(
        base.mapping,
        base.synthesis,
        checksum=base.checksum,
        device="cpu",
        framer=FaceFramer(CentredFace(), detect_size=32, crop_size=32),  # type: ignore[arg-type]
    )

    def load(app, device=None, batch_size=None):  # type: ignore[no-untyped-def]
        return generator, ColourEstimator()

    monkeypatch.setattr(ingest.command_models, "load_models", load)
    return generator


def test_fit_then_calibrate_writes_directions_with_provenance(
    runner, small_models: PhotorealGenerator, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "directions.json"
    fitted = runner.invoke(
        args=["ingest", "fit-directions", "--samples", "120", "--batch", "16", "--out", str(path)]
    )
    assert fitted.exit_code == 0, fitted.output
    data = json.loads(path.read_text())
    assert data["generator_checksum"] == small_models.checksum
    provenance = data["provenance"]
    assert provenance["seeds"] == [500_000, 500_119] and provenance["labelled"] == 120
    assert provenance["estimator"].startswith("colour") and provenance["truncation"] == 0.7
    assert "age_response" not in data
    steering = Steering.load(path, generator_checksum=small_models.checksum)
    assert np.isfinite(steering.age.heldout["mae"]) and steering.age.heldout["rows"] == 24

    calibrated = runner.invoke(
        args=["ingest", "calibrate-steering", "--seeds", "8", "--steps", "1,2", "--file", str(path)]
    )
    assert calibrated.exit_code == 0, calibrated.output
    response = Steering.load(path).response
    assert response is not None and response.younger > 0 and response.older > 0
    assert response.provenance["pairs"] == {"younger": 16, "older": 16}
    assert "years younger" in calibrated.output, calibrated.output


def test_calibrate_refuses_directions_of_other_weights(
    runner, small_models: PhotorealGenerator, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "directions.json"
    runner.invoke(args=["ingest", "fit-directions", "--samples", "40", "--out", str(path)])
    data = json.loads(path.read_text())
    data["generator_checksum"] = "0" * 64
    path.write_text(json.dumps(data))
    before = path.read_text()
    result = runner.invoke(
        args=["ingest", "calibrate-steering", "--seeds", "4", "--file", str(path)]
    )
    assert result.exit_code != 0
    assert "fit-directions" in result.output or "fit-directions" in str(result.exception)
    assert path.read_text() == before  # nothing written
