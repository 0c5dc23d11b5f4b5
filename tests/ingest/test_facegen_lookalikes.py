"""Look-alikes on the small random MobileStyleGAN (fast), and once with the real weights.

The small network (tests/catalog/studio_fakes.py) renders 32 px noise, not faces, so the
face finder is replaced by "the middle of the photo", the descriptor is a tiny random
network (face-api's at 150 px made each test take ~20 s) and the studio starts from one
candidate: the tests check the machinery (shapes, seeds, mixing, progress, the encoder's
start, the estimator's gender); the ``model`` test checks that outputs keep the input's
gender (by the estimator, which nothing optimises) and resemble it.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.types import AgeGenderBatch
from ingest.facegen.encoder import Encoder
from ingest.facegen.invert import iterations_for
from ingest.facegen.lookalikes import (
    FacegenModels,
    LookalikeJob,
    LookalikeStudio,
    layer_weights,
)
from ingest.facegen.photo import PhotoRejected
from ingest.facegen.prompt import read_prompt
from tests.catalog.studio_fakes import made_up_steering, random_weights, small_generator


class TinyDescriptor(torch.nn.Module):
    """A random stand-in for face-api's descriptor: ``embed`` as FaceDescriptorNet's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8 * 16, 128)
        self.eval().requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        x = torch.relu(self.conv(images.float() / 127.5 - 1))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)) * 0.1


class FixedEstimator:
    """Reads every face as the same gender and age."""

    def __init__(self, p_female: float, age: float = 40.0) -> None:
        self.p_female, self.age = p_female, age

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        n = len(images)
        return AgeGenderBatch(np.full(n, self.age, np.float32), np.full(n, self.p_female))


def middle(image: np.ndarray) -> tuple[int, int, int, int]:
    return image.shape[1] // 4, image.shape[0] // 4, image.shape[1] // 2, image.shape[0] // 2


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return random_weights(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def studio(weights: tuple[Path, str]) -> LookalikeStudio:
    def loader() -> FacegenModels:
        generator = small_generator(weights)
        steering = made_up_steering(generator)
        return FacegenModels(generator, steering, TinyDescriptor(), find_face=middle)

    return LookalikeStudio(loader, candidates=2)


def small_encoder(generator, descriptor) -> Encoder:  # type: ignore[no-untyped-def]
    """An encoder fitted, as the real one is, on the generator's own renders."""
    from ingest.facegen.encoder import features_of, pixels_of

    styles = generator.sample_latents(list(range(48)))
    with torch.no_grad():
        images = generator.synthesis(styles)
        desc = descriptor.embed(images * 127.5 + 127.5).numpy()
    frames = (images * 127.5 + 127.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    ages, female = np.full(48, 40.0), np.linspace(0, 1, 48)
    x = features_of(desc, ages, female, pixels_of(frames))
    return Encoder.fit(x, styles.numpy(), 10.0, {"generator_checksum": generator.checksum})


@pytest.fixture(scope="module")
def male_studio(weights: tuple[Path, str]) -> LookalikeStudio:
    """With an encoder and an estimator that reads every face as male."""

    def loader() -> FacegenModels:
        generator = small_generator(weights)
        descriptor = TinyDescriptor()
        return FacegenModels(
            generator, made_up_steering(generator), descriptor, find_face=middle,
            estimator=FixedEstimator(0.1), encoder=small_encoder(generator, descriptor),
        )  # fmt: skip

    return LookalikeStudio(loader)


@pytest.fixture(scope="module")
def photo() -> bytes:
    image = np.random.default_rng(3).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG")
    return buffer.getvalue()


def job(photo: bytes, **kwargs: object) -> LookalikeJob:
    fields: dict = {"samples": 3, "steps": 6, "s_scale": 1.0, "seed": 7, "size": 256}
    fields |= kwargs
    return LookalikeJob(photo=photo, plan=read_prompt(str(fields.pop("prompt", ""))), **fields)


def test_shapes_and_distinct_samples(studio: LookalikeStudio, photo: bytes) -> None:
    out = studio.make(job(photo, samples=3, size=300))
    assert len(out.outputs) == len(out.distances) == 3
    for data in [out.inversion, *out.outputs]:
        picture = Image.open(io.BytesIO(data))
        assert (picture.format, picture.size) == ("JPEG", (300, 300))
    # Distinct styles; the small random network barely responds to its styles (and its
    # noise maps are zero), so its JPEGs may round alike: the model test checks pictures.
    assert len({s.tobytes() for s in out.styles}) == 3
    assert all(d >= 0 for d in out.distances) and out.inversion_distance >= 0
    assert out.seconds > 0


def test_same_job_same_outputs_other_seed_other_outputs(
    studio: LookalikeStudio, photo: bytes
) -> None:
    first, again = studio.make(job(photo)), studio.make(job(photo))
    assert first.outputs == again.outputs and first.distances == again.distances
    other = studio.make(job(photo, seed=8))
    assert other.inversion == first.inversion  # the inversion does not depend on the seed
    assert other.outputs != first.outputs and other.styles[0].tolist() != first.styles[0].tolist()


def test_s_scale_keeps_more_of_the_inversion(studio: LookalikeStudio, photo: bytes) -> None:
    inversion = studio.invert(photo, 6)
    gaps = []
    for s in (0.0, 0.5, 1.0, 1.5, 2.0):
        out = studio.lookalikes(inversion, job(photo, s_scale=s))
        assert out.inversion_style is not None
        gaps.append(np.mean([np.linalg.norm(st - out.inversion_style) for st in out.styles]))
    assert all(a > b for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] > 0  # even at 2 the samples are not the inversion


def test_layer_weights_rise_with_s_scale_and_from_fine_to_coarse() -> None:
    low, mid, high = (layer_weights(s, 16) for s in (0.0, 1.0, 2.0))
    assert np.all(low <= mid) and np.all(mid <= high) and high.max() <= 1.0
    assert np.all(np.diff(mid) <= 0)  # coarse layers keep the most
    with pytest.raises(ValueError):
        layer_weights(2.5, 16)


def test_progress_is_reported_up_to_one(studio: LookalikeStudio, photo: bytes) -> None:
    seen: list[float] = []
    studio.make(job(photo, steps=11), progress=seen.append)
    assert len(seen) == iterations_for(11) + 1
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0] < 1


def test_gender_and_age_words_move_the_styles(studio: LookalikeStudio, photo: bytes) -> None:
    inversion = studio.invert(photo, 6)
    steering = studio.models.steering
    plain = studio.lookalikes(inversion, job(photo))
    older = studio.lookalikes(inversion, job(photo, prompt="much older"))
    male = studio.lookalikes(inversion, job(photo, prompt="a man"))
    age = [float(steering.age.predict(np.stack(o.styles).mean(1)).mean()) for o in (plain, older)]
    assert age[1] > age[0] + 5
    assert (steering.female_score(np.stack(male.styles).mean(1)) < 0).all()


def test_bad_jobs_are_refused(studio: LookalikeStudio, photo: bytes) -> None:
    with pytest.raises(PhotoRejected) as caught:
        studio.make(job(b"not a photo"))
    assert caught.value.code == "not_an_image"
    for bad in ({"samples": 5}, {"size": 128}, {"s_scale": 2.5}, {"steps": 0}):
        with pytest.raises(ValueError):
            studio.make(job(photo, **bad))


def test_steps_map_to_iterations() -> None:
    assert [iterations_for(s) for s in (21, 31, 41)] == [12, 18, 24]


def test_the_estimators_gender_is_kept_from_the_start_to_the_outputs(
    male_studio: LookalikeStudio, photo: bytes
) -> None:
    out = male_studio.make(job(photo, samples=3))
    steering = male_studio.models.steering
    assert out.input_female == pytest.approx(0.1) and out.input_age == 40.0
    assert out.output_female == pytest.approx([0.1] * 3)
    assert (steering.female_score(np.stack(out.styles).mean(1)) < 0).all()
    assert out.inversion_style is not None
    assert steering.female_score(out.inversion_style.mean(0)[None])[0] < 0


def test_an_output_read_as_the_other_gender_is_pushed_further(
    weights: tuple[Path, str], photo: bytes
) -> None:
    generator = small_generator(weights)
    steering = made_up_steering(generator)
    models = FacegenModels(generator, steering, TinyDescriptor(), find_face=middle)
    plain = LookalikeStudio(lambda: models, candidates=1)
    out = plain.make(job(photo, prompt="a man"))
    models.estimator = FixedEstimator(0.9)  # every face reads female: each sample retried
    retried = LookalikeStudio(lambda: models, candidates=1).make(job(photo, prompt="a man"))
    before = steering.female_score(np.stack(out.styles).mean(1))
    after = steering.female_score(np.stack(retried.styles).mean(1))
    assert (after < before).all() and (after < 0).all()


def test_encoder_round_trip_and_refuses_other_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 322)), rng.normal(size=(60, 512))
    encoder = Encoder.fit(x, y, 3.0, {"generator_checksum": "abc", "faces": 60})
    encoder.save(tmp_path / "enc.npz")
    again = Encoder.load(tmp_path / "enc.npz", generator_checksum="abc")
    assert np.allclose(
        again.predict_features(x[:3]), encoder.predict_features(x[:3]), atol=2e-3
    )  # float16
    assert again.provenance["faces"] == 60
    with pytest.raises(ValueError, match="fitted for generator abc"):
        Encoder.load(tmp_path / "enc.npz", generator_checksum="other")


def test_the_shipped_encoder_has_its_provenance() -> None:
    from ingest.facegen.encoder import ENCODER_FILE

    encoder = Encoder.load(ENCODER_FILE)
    assert encoder.matrix.shape == (322, 512)
    for key in ("generator_checksum", "faces", "alpha", "command", "heldout_r2_by_alpha"):
        assert key in encoder.provenance
    assert encoder.provenance["faces"] >= 500
    assert ENCODER_FILE.stat().st_size < 400_000


UNRELATED_MEDIAN = 0.66  # descriptor distance of unrelated UTKFace faces (bench_facegen)


@pytest.mark.model
@pytest.mark.parametrize(("gender", "age", "seed"), [("male", 45, 301), ("female", 30, 302)])
def test_real_lookalikes_keep_gender_and_resemble(
    models_dir: Path, gender: str, age: float, seed: int
) -> None:
    """A clearly male and a clearly female generated face (reframed, JPEG): the estimator,
    which the optimisation never sees, reads every output as the input's gender, and the
    descriptor puts the inversion and the outputs nearer than unrelated faces are."""
    from ingest.steering import aimed_styles

    studio = _real_studio(models_dir)
    models = studio.models
    style, _ = aimed_styles(
        models.steering, models.generator.candidate_styles(seed, 64), gender, age
    )
    with torch.inference_mode():
        face = models.generator.generate(torch.from_numpy(style[None]), 1)[0].numpy()
    picture = Image.fromarray(face).resize((540, 540)).crop((20, 10, 500, 490))
    data = io.BytesIO()
    picture.save(data, "JPEG", quality=90)
    out = studio.make(LookalikeJob(data.getvalue(), 2, 6, 1.0, 0, read_prompt("")))
    female = gender == "female"
    assert out.input_female is not None and (out.input_female > 0.5) == female
    assert [p > 0.5 for p in out.output_female] == [female, female], out.output_female
    assert out.inversion_distance < 0.5, out.inversion_distance
    assert len({out.inversion, *out.outputs}) == 3  # distinct pictures
    assert max(out.distances) < UNRELATED_MEDIAN, out.distances


_STUDIOS: dict[Path, LookalikeStudio] = {}


def _real_studio(models_dir: Path) -> LookalikeStudio:
    """One real-weights studio for both parametrised cases (loading takes ~10 s)."""
    from ingest.facegen.lookalikes import load_facegen_models

    if models_dir not in _STUDIOS:
        config = {"MODELS_DIR": models_dir, "DEVICE": "cpu", "TORCH_THREADS": None,
                  "TRUNCATION": 0.7}  # fmt: skip
        _STUDIOS[models_dir] = LookalikeStudio(lambda: load_facegen_models(config))
    return _STUDIOS[models_dir]
