"""Look-alikes of an uploaded face (ModelsLab's face_gen), made with the photoreal generator.

How, in four steps (docs/models.md, "Look-alikes (face_gen)", has the figures):
1. **Align**: the one face in the photo (``photo.find_one_face``) is framed as the
   generator frames its faces (``align.align_face``).
2. **Invert**: W+ styles whose render matches the aligned photo (``invert.Inverter``),
   started from the encoder's style for the photo's descriptor and the estimator's age
   and gender (``encoder.Encoder``), moved to the gender the estimator reads; pixels at
   256 px plus face-api's descriptor distance, tens of Adam steps.
3. **Mix**: each sample is a per-layer blend of the inversion and a seeded random style
   of the same gender and a similar age; ``s_scale`` sets the inversion's share per layer
   group (``layer_weights``): at 1 about two thirds, so the samples are other people of
   the same look rather than recoloured copies. Each sample also gets its own fresh
   noise maps (hair strands, pores), so no two are the same picture.
4. **Edit**: every sample is moved along ``ingest.steering``'s gender direction until it
   reads as the wanted gender (the prompt's, else the one the estimator sees in the
   photo), and along the age direction to the prompt's age (else back to the photo's
   when the blend drifted); a sample the estimator still reads as the other gender is
   pushed further and rendered once more.

The reported distances are face-api descriptor distances between the aligned photo's
face crop and each output's (below about 0.6 is dlib's "same person").
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from analysis.recognition import descriptor_distance
from ingest.facegen.align import align_face, face_crop_box
from ingest.facegen.invert import Inverter, iterations_for
from ingest.facegen.photo import find_one_face, load_photo
from ingest.facegen.prompt import PromptPlan
from ingest.imaging import encode, resize

logger = logging.getLogger(__name__)

# How much of each layer group comes from the inversion, at s_scale 0, 1 and 2 (linear in
# between). Groups by position in the W+ stack (coarse to fine): up to 32 px, 64-128 px,
# 256 px up and the colour head (for MobileStyleGAN's 16 layers: 0-6, 7-10, 11-15).
MIX_TABLE = {"coarse": (0.3, 0.7, 0.95), "middle": (0.2, 0.6, 0.9), "fine": (0.1, 0.5, 0.85)}
GENDER_MARGIN = 2.0  # a gender edit goes until the fitted logit reads this clearly
RETRY_MARGIN = 4.0  # ... and this far for a sample the estimator read as the other gender
MAX_GENDER_STEP = 4.5  # style units, as far as age edits go
START_MARGIN = 1.5  # the inversion's start is moved until its gender logit reads this
KEEP_MARGIN, KEEP_WEIGHT = 1.0, 0.05  # hinge on the inversion's gender logit while fitting
AGE_TOLERANCE = 10.0  # years a blend may drift from the photo's age before it is moved back
CANDIDATES_PER_SAMPLE = 16
QUALITY = 90


@dataclass(frozen=True)
class LookalikeJob:
    """One face_gen request, as the catalog's job queue hands it over."""

    photo: bytes
    samples: int  # 1..4
    steps: int  # num_inference_steps (21, 31, 41): optimisation iterations, iterations_for
    s_scale: float  # 0..2: how much of the inverted identity the outputs keep
    seed: int
    plan: PromptPlan
    size: int = 512


@dataclass(frozen=True)
class LookalikeOutput:
    """The inversion, the look-alikes and how close each is to the photo's face."""

    inversion: bytes
    outputs: list[bytes]
    distances: list[float]
    inversion_distance: float
    seconds: float
    styles: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)
    inversion_style: np.ndarray | None = field(default=None, repr=False, compare=False)
    # The estimator's reading of the photo and of each output (None without an estimator).
    input_female: float | None = None
    input_age: float | None = None
    output_female: list[float] = field(default_factory=list)
    output_age: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Inversion:
    """A photo inverted: W+ ``(1, layers, 512)``, its face descriptor, its aligned frame."""

    styles: torch.Tensor
    wanted: torch.Tensor
    frame: np.ndarray
    female: float | None = None  # the estimator's p(female) of the photo's face
    age: float | None = None  # and its age


@dataclass
class FacegenModels:
    """The photoreal generator, its style directions, the descriptor, the face finder."""

    generator: Any  # ingest.generators.photoreal.PhotorealGenerator
    steering: Any  # ingest.steering.Steering
    descriptor: Any  # analysis.recognition.FaceDescriptorNet
    find_face: Callable[[np.ndarray], tuple[int, int, int, int]] = find_one_face
    estimator: Any = None  # analysis.estimators.FaceApiEstimator: gender and age
    encoder: Any = None  # ingest.facegen.encoder.Encoder: the inversion's start


def load_facegen_models(config: Mapping[str, Any]) -> FacegenModels:
    """The models ``ingest.seeded.load_studio_models`` loads, the descriptor for the estimator."""
    from analysis.device import configure_threads
    from analysis.estimators import load_estimator
    from analysis.recognition import FaceDescriptorNet
    from ingest.facegen.encoder import load_encoder
    from ingest.generators import load_generator
    from ingest.steering import load_steering

    configure_threads(config["TORCH_THREADS"])
    generator = load_generator(
        "mobilestylegan", config["MODELS_DIR"], device=config["DEVICE"],
        truncation=config["TRUNCATION"],
    )  # fmt: skip
    steering = load_steering(generator)
    if steering is None:
        raise RuntimeError(
            "no style directions fitted for the photoreal generator's weights: run "
            "`facecat ingest fit-directions` and `facecat ingest calibrate-steering`"
        )
    descriptor = FaceDescriptorNet.from_models_dir(config["MODELS_DIR"], device=generator.device)
    estimator = load_estimator(
        config.get("ESTIMATOR", "faceapi"), config["MODELS_DIR"], device=generator.device,
        batch_size=16,
    )  # fmt: skip
    try:
        encoder = load_encoder(generator)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    if encoder is None:
        logger.warning("no look-alike encoder: inversions start from fixed candidates")
    return FacegenModels(generator, steering, descriptor, estimator=estimator, encoder=encoder)


def layer_weights(s_scale: float, layers: int) -> np.ndarray:
    """Per layer, the share taken from the inversion at ``s_scale`` (see ``MIX_TABLE``)."""
    if not 0.0 <= s_scale <= 2.0:
        raise ValueError(f"s_scale must be in 0..2, got {s_scale}")
    weights = np.empty(layers)
    for layer in range(layers):
        place = layer / max(1, layers - 1)
        group = "coarse" if place <= 0.4 else "middle" if place <= 0.67 else "fine"
        weights[layer] = np.interp(s_scale, (0.0, 1.0, 2.0), MIX_TABLE[group])
    return weights


class LookalikeStudio:
    """Makes look-alikes; loads its models once, lazily, thread-safely (as SeededStudio)."""

    def __init__(self, loader: Callable[[], Any], candidates: int | None = None) -> None:
        self._loader = loader
        self._candidates = candidates  # start candidates without an encoder (tests: fewer)
        self._models: Any = None
        self._inverter: Inverter | None = None
        self._lock = threading.Lock()
        self._run = threading.Lock()  # one job at a time: the noise maps are swapped

    @property
    def models(self) -> Any:
        """The models, loaded by the first caller (others wait on the lock, then reuse)."""
        if self._models is None:
            with self._lock:
                if self._models is None:
                    models = self._loader()
                    extra = {} if self._candidates is None else {"candidates": self._candidates}
                    self._inverter = Inverter(models.generator, models.descriptor, **extra)
                    self._models = models
                    logger.info("look-alike models loaded")
        return self._models

    def make(
        self, job: LookalikeJob, progress: Callable[[float], None] | None = None
    ) -> LookalikeOutput:
        """The look-alikes of ``job``; ``progress`` gets 0..1 while the inversion runs.

        :raise PhotoRejected: the photo is not an image, too large, or not of one face.
        """
        _check(job)
        started = time.monotonic()
        inversion = self.invert(job.photo, job.steps, progress)
        output = self.lookalikes(inversion, job)
        if progress is not None:
            progress(1.0)
        return replace(output, seconds=time.monotonic() - started)

    def invert(
        self, photo: bytes, steps: int, progress: Callable[[float], None] | None = None
    ) -> Inversion:
        """Steps 1 and 2 for one photo: align it, invert it (reusable across s_scales)."""
        models = self.models
        inverter = self._inverter
        assert inverter is not None
        image = load_photo(photo)
        frame, mask = align_face(image, models.find_face(image), inverter.size)
        with self._run:
            with torch.no_grad():
                wanted = inverter.embed(_to_tensor(frame, models.generator.device))
            female, age = _estimate(models.estimator, frame[None])
            start, keep = None, None
            if models.encoder is not None:
                start = start_style(models, wanted, female, age, frame)
            if female is not None:
                keep = _gender_keep(models.steering, 1.0 if female[0] > 0.5 else -1.0)
            styles = inverter.invert(frame, mask, iterations_for(steps), progress, start, keep)
        return Inversion(
            styles, wanted, frame,
            None if female is None else float(female[0]), None if age is None else float(age[0]),
        )  # fmt: skip

    def lookalikes(self, inversion: Inversion, job: LookalikeJob) -> LookalikeOutput:
        """Steps 3 and 4: ``job.samples`` look-alikes of an inversion, encoded and measured."""
        _check(job)
        started = time.monotonic()
        models, inverter = self.models, self._inverter
        assert inverter is not None
        inverted = inversion.styles
        with self._run, torch.no_grad():
            sign = _wanted_sign(job.plan.gender, models.steering, inverted, inversion.female)
            known = job.plan.gender is not None or inversion.female is not None
            styles = mix(models, inverted, job, sign if known else None, inversion.age)
            renders = [_render(models.generator, inverted, None)]
            renders += [
                _render(models.generator, s[None], _noise(job.seed, i))
                for i, s in enumerate(styles)
            ]
            frames = torch.cat([inverter.to_loss_size(r) for r in renders])
            female, age = _estimate(models.estimator, _uint8_all(frames))
            if female is not None:  # the held-out check: re-render a sample read wrongly
                for i in range(len(styles)):
                    if sign * (female[i + 1] - 0.5) < 0:
                        moved = models.steering.gender.shift_to(
                            styles[i : i + 1].mean(1).numpy(), np.array([sign * RETRY_MARGIN]),
                            MAX_GENDER_STEP,
                        )  # fmt: skip
                        styles[i] += torch.from_numpy(moved) - styles[i].mean(0, keepdim=True)
                        renders[i + 1] = _render(
                            models.generator, styles[i : i + 1], _noise(job.seed, i)
                        )
                        frames[i + 1] = inverter.to_loss_size(renders[i + 1])[0]
                female, age = _estimate(models.estimator, _uint8_all(frames))
            distances = descriptor_distance(inverter.embed(frames), inversion.wanted)
        images = [_uint8(r) for r in renders]
        encoded = [encode(resize(image, job.size), "jpeg", QUALITY) for image in images]
        return LookalikeOutput(
            inversion=encoded[0],
            outputs=encoded[1:],
            distances=[float(d) for d in distances[1:]],
            inversion_distance=float(distances[0]),
            seconds=time.monotonic() - started,
            styles=[s.numpy() for s in styles],
            inversion_style=inverted[0].numpy(),
            input_female=inversion.female,
            input_age=inversion.age,
            output_female=[] if female is None else [float(v) for v in female[1:]],
            output_age=[] if age is None else [float(v) for v in age[1:]],
        )


def mix(
    models: Any,
    inverted: torch.Tensor,
    job: LookalikeJob,
    sign: float | None = None,
    photo_age: float | None = None,
) -> torch.Tensor:
    """``(samples, layers, 512)``: the inversion mixed with seeded random styles, edited.

    ``sign``: +1 female, -1 male, what every sample is steered to (default: the prompt's,
    else only the partners follow the inversion's fitted gender); ``photo_age``: the
    estimator's age of the photo (default: the inversion's fitted age), what the samples
    keep when the prompt names no age.
    """
    steering = models.steering
    layers = inverted.shape[1]
    own = inverted[0].numpy().astype(np.float64)
    centre = own.mean(0)
    steer = sign is not None or job.plan.gender is not None
    if sign is None:
        sign = _wanted_sign(job.plan.gender, steering, inverted, None)
    own_age = float(steering.age.predict(centre[None])[0]) if photo_age is None else photo_age
    aim = (job.plan.age if job.plan.age is not None else own_age) + job.plan.age_shift
    asked_age = job.plan.age is not None or bool(job.plan.age_shift)
    # Random partners of the wanted gender and nearest in age, so mixing does not drift.
    rng = np.random.default_rng(int(job.seed))
    z = rng.standard_normal((CANDIDATES_PER_SAMPLE * job.samples, 512)).astype(np.float32)
    pool = models.generator.styles(torch.from_numpy(z)).numpy().astype(np.float64)
    fits = sign * steering.female_score(pool) > 1.0
    gaps = np.abs(steering.age.predict(pool) - aim) + np.where(fits, 0.0, 1e3)
    partners = pool[np.argsort(gaps, kind="stable")[: job.samples]]
    alpha = layer_weights(job.s_scale, layers)[None, :, None]
    mixed = alpha * own[None] + (1 - alpha) * partners[:, None, :]
    for i in range(job.samples):
        mean = mixed[i].mean(0)
        score = float(steering.female_score(mean[None])[0])
        if steer and sign * score < GENDER_MARGIN:
            moved = steering.gender.shift_to(
                mean[None], np.array([sign * GENDER_MARGIN]), MAX_GENDER_STEP
            )[0]
            mixed[i] += moved - mean
            mean = moved.astype(np.float64)
        drift = abs(float(steering.age.predict(mean[None])[0]) - aim)
        if asked_age or drift > AGE_TOLERANCE:
            aged = steering.shift_age(mean[None], np.array([aim]))[0]
            mixed[i] += aged - mean
    return torch.from_numpy(mixed.astype(np.float32))


def _wanted_sign(
    gender: str | None, steering: Any, inverted: torch.Tensor, female: float | None
) -> float:
    """+1 female, -1 male: asked for, else what the estimator saw in the photo, else what
    the inversion reads as by the fitted score."""
    if gender is not None:
        return 1.0 if gender == "female" else -1.0
    if female is not None:
        return 1.0 if female > 0.5 else -1.0
    centre = inverted[0].numpy().astype(np.float64).mean(0)
    return 1.0 if float(steering.female_score(centre[None])[0]) > 0 else -1.0


def start_style(
    models: Any,
    wanted: torch.Tensor,
    female: np.ndarray | None,
    age: np.ndarray | None,
    frame: np.ndarray,
) -> torch.Tensor:
    """``(512,)``: the encoder's style for the photo, moved to the estimator's gender."""
    features = (
        wanted.cpu().numpy(),
        np.array([30.0]) if age is None else age,
        np.array([0.5]) if female is None else female,
        frame[None],
    )
    style = models.encoder.predict(*features).astype(np.float64)
    if female is not None:
        sign = 1.0 if female[0] > 0.5 else -1.0
        if sign * float(models.steering.female_score(style)[0]) < START_MARGIN:
            style = models.steering.gender.shift_to(
                style, np.array([sign * START_MARGIN]), MAX_GENDER_STEP
            )
    return torch.from_numpy(np.asarray(style, np.float32)[0])


def _gender_keep(steering: Any, sign: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A hinge on the fitted gender logit of a mean style (N, 512): zero while it reads
    ``sign``'s gender by ``KEEP_MARGIN``, rising as it drifts to the other."""
    d = steering.gender
    coef = torch.from_numpy(np.asarray(d.coef, np.float32))
    centre = torch.from_numpy(np.asarray(d.centre, np.float32))
    a, b = float(d.stretch[0]), float(d.stretch[1])

    def keep(style: torch.Tensor) -> torch.Tensor:
        score = a * ((style - centre.to(style.device)) @ coef.to(style.device) + d.intercept) + b
        return KEEP_WEIGHT * torch.relu(KEEP_MARGIN - sign * score)

    return keep


def _estimate(estimator: Any, frames: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The estimator's p(female) and age of aligned frames' face crops (None without one)."""
    if estimator is None:
        return None, None
    x0, y0, x1, y1 = face_crop_box(frames.shape[1])
    found = estimator.predict(np.ascontiguousarray(frames[:, y0:y1, x0:x1]))
    return np.asarray(found.p_female, np.float64), np.asarray(found.age, np.float64)


def _noise(seed: int, sample: int) -> torch.Generator:
    """Each sample's own noise maps, from the job's seed and its index."""
    return torch.Generator().manual_seed(int(seed) * 16 + sample)


def _uint8_all(frames: torch.Tensor) -> np.ndarray:
    return (frames * 127.5 + 127.5).clamp(0, 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _check(job: LookalikeJob) -> None:
    if not 1 <= job.samples <= 4:
        raise ValueError(f"samples must be 1..4, got {job.samples}")
    if not 256 <= job.size <= 1024:
        raise ValueError(f"size must be 256..1024, got {job.size}")
    if not 0.0 <= job.s_scale <= 2.0:
        raise ValueError(f"s_scale must be in 0..2, got {job.s_scale}")
    iterations_for(job.steps)


def _render(generator: Any, styles: torch.Tensor, noise: torch.Generator | None) -> torch.Tensor:
    """One face ``(1, 3, S, S)`` in -1..1; with ``noise``, fresh noise maps drawn from it."""
    with fresh_noise(generator.synthesis, noise):
        return generator.synthesis(styles.to(generator.device))


@contextlib.contextmanager
def fresh_noise(synthesis: torch.nn.Module, source: torch.Generator | None) -> Iterator[None]:
    """Swap every fixed noise map for a new one of the same strength while inside.

    The exporter folded each layer's noise times its strength into one constant, so that
    constant's spread is the strength; the new map is standard noise at that spread.
    """
    if source is None:
        yield
        return
    saved = {}
    for name, module in synthesis.named_modules():
        buffer = getattr(module, "noise", None)
        if isinstance(buffer, torch.Tensor):
            saved[name] = buffer
            fresh = torch.randn(buffer.shape, generator=source) * float(buffer.std())
            module.noise = fresh.to(buffer.device, buffer.dtype)
    try:
        yield
    finally:
        modules = dict(synthesis.named_modules())
        for name, buffer in saved.items():
            modules[name].noise = buffer


def _to_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images[0] * 127.5 + 127.5).clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()


def face_crop(frame: np.ndarray) -> np.ndarray:
    """The descriptor's crop of a square frame (uint8), for measurements and sheets."""
    x0, y0, x1, y1 = face_crop_box(frame.shape[0])
    return frame[y0:y1, x0:x1]


def studio_for(config: Mapping[str, Any]) -> LookalikeStudio:
    """A studio loading the configured models on first use."""
    return LookalikeStudio(lambda: load_facegen_models(config))
