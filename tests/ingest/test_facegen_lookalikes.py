"""Look-alikes on the small random MobileStyleGAN (fast), and once with the real weights.

The small network (tests/catalog/studio_fakes.py) renders 32 px noise, not faces, so the
face finder is replaced by "the middle of the photo" and the descriptor is a randomly
initialised face-api network: the tests check the machinery (shapes, seeds, mixing,
progress), the ``model`` test checks that outputs resemble the input.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.recognition import FaceDescriptorNet
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


def random_descriptor() -> FaceDescriptorNet:
    torch.manual_seed(1)
    net = FaceDescriptorNet()
    torch.nn.init.normal_(net.fc, std=0.1)
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> LookalikeStudio:
    weights = random_weights(tmp_path_factory.mktemp("small"))

    def loader() -> FacegenModels:
        generator = small_generator(weights)
        return FacegenModels(
            generator,
            made_up_steering(generator),
            random_descriptor(),
            find_face=lambda image: (image.shape[1] // 4, image.shape[0] // 4,
                                     image.shape[1] // 2, image.shape[0] // 2),
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
    assert len(set(out.outputs)) == 3 and out.inversion not in out.outputs
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


@pytest.mark.model
def test_real_lookalikes_resemble_a_generated_face(models_dir: Path) -> None:
    from analysis.recognition import face_descriptors
    from ingest.facegen.align import align_face
    from ingest.facegen.lookalikes import face_crop, load_facegen_models
    from ingest.facegen.photo import find_one_face

    config = {"MODELS_DIR": models_dir, "DEVICE": "cpu", "TORCH_THREADS": None,
              "TRUNCATION": 0.7}  # fmt: skip
    studio = LookalikeStudio(lambda: load_facegen_models(config))
    generator = studio.models.generator
    with torch.inference_mode():
        faces = generator.generate(generator.sample_latents([5, 11, 12, 13]), 4).numpy()
    frames = [np.asarray(Image.fromarray(f).resize((512, 512))) for f in faces]
    data = io.BytesIO()
    Image.fromarray(frames[0][20:500, 10:490]).save(data, "JPEG", quality=90)
    out = studio.make(LookalikeJob(data.getvalue(), 2, 6, 1.0, 0, read_prompt("")))
    crops = [face_crop(align_face(f, find_one_face(f), 256)[0]) for f in frames]
    desc = face_descriptors(studio.models.descriptor, np.stack(crops))
    unrelated = torch.linalg.vector_norm(desc[1:] - desc[0], dim=-1)
    assert max(out.distances) < float(unrelated.min()), (out.distances, unrelated)
