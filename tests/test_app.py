"""The factory: settings layering, start-up validation naming the bad variable, CLI entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from catalog.config import ConfigError


def base(tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "STORAGE_URL": (tmp_path / "o").as_uri()}


def test_environment_is_read_and_json_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACECAT_MAX_RANDOM_COUNT", "7")
    monkeypatch.setenv("FACECAT_ONDEMAND_ENABLED", "false")
    app = create_app(base(tmp_path))
    assert app.config["MAX_RANDOM_COUNT"] == 7
    assert app.config["ONDEMAND_ENABLED"] is False


def test_test_config_overrides_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACECAT_MAX_RANDOM_COUNT", "7")
    assert create_app({**base(tmp_path), "MAX_RANDOM_COUNT": 9}).config["MAX_RANDOM_COUNT"] == 9


def test_instance_defaults(tmp_path: Path) -> None:
    app = create_app({"STORAGE_URL": None, "DATABASE_URL": None, "MODELS_DIR": None})
    instance = Path(app.instance_path)
    assert app.config["DATABASE_URL"] == f"sqlite:///{instance / 'facecat.db'}"
    assert app.config["STORAGE_URL"] == (instance / "objects").as_uri()
    assert app.config["MODELS_DIR"] == str(instance / "models")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FACECAT_DATABASE_URL", "mysql://root@localhost/facecat"),
        ("FACECAT_STORAGE_URL", "ftp://example.com/faces"),
        ("FACECAT_STORAGE_URL", "s3://key:secret@minio:9000/"),
        ("FACECAT_STORAGE_URL", "s3://key:secret@minio:9000/x"),
        ("FACECAT_PUBLIC_BASE_URL", "cdn.example.com/faces"),
        ("FACECAT_MAX_RANDOM_COUNT", "lots"),
        ("FACECAT_MAX_RANDOM_COUNT", "0"),
        ("FACECAT_THUMB_SIZE", "500"),
        ("FACECAT_ONDEMAND_ENABLED", '"perhaps"'),
        ("FACECAT_TARGET_COMPOSITION", '{"female:20-39": -1}'),
        ("FACECAT_TARGET_COMPOSITION", '{"robot:20-39": 1}'),
        ("FACECAT_DEVICE", "tpu"),
        ("FACECAT_TRUSTED_HOSTS", "faces.example.com/img"),
        ("FACECAT_TRUSTED_HOSTS", "[1, 2]"),
    ],
)
def test_bad_setting_fails_start_up_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    config = base(tmp_path)
    config.pop(variable.removeprefix("FACECAT_"), None)
    with pytest.raises(ConfigError, match=variable):
        create_app(config)


def test_console_script_works_outside_the_checkout(tmp_path: Path) -> None:
    """``facecat`` is installed with the package and finds create_app from any folder."""
    script = shutil.which("facecat", path=str(Path(sys.executable).parent))
    assert script, "the facecat console script is not installed (pip install -e .)"
    env = {
        **os.environ,
        "FACECAT_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "FACECAT_STORAGE_URL": (tmp_path / "o").as_uri(),
    }
    result = subprocess.run(
        [script, "routes"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "/face/json" in result.stdout and "/openapi.json" in result.stdout


def test_web_app_starts_without_torch(tmp_path) -> None:
    """Web workers build the app and serve catalog lookups without importing torch.

    DESIGN: catalog imports torch only when on-demand generation first runs, so web
    processes start fast and stay small. A fresh interpreter is needed because this test
    process has long imported torch.
    """
    code = (
        "import sys\n"
        "from app import create_app\n"
        f"app = create_app({{'DATABASE_URL': 'sqlite:///{tmp_path}/db.sqlite',"
        f" 'STORAGE_URL': '{tmp_path.as_uri()}/objects'}})\n"
        "app.test_client().get('/healthz')\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
