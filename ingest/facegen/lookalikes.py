"""Look-alikes of an uploaded face (ModelsLab's face_gen), made with the photoreal generator.

How, in four steps (docs/models.md, "Look-alikes (face_gen)", has the figures):
1. **Align**: the one face in the photo (``photo.find_one_face``) is framed as the
   generator frames its faces (``align.align_face``).
2. **Invert**: W+ styles whose render matches the aligned photo (``invert.Inverter``):
   pixels at 256 px plus face-api's descriptor distance, tens of Adam steps.
3. **Mix**: each sample takes its coarse layers (pose, face shape: who it is) mostly from
   the inversion and its fine layers (colour, skin, light) mostly from a seeded random
   style of the same gender and a similar age; ``s_scale`` sets how much of each group
   comes from the inversion (``layer_weights``). Each sample also gets its own fresh
   noise maps (hair strands, pores), so no two are the same picture.
4. **Edit**: the prompt's gender and age move every layer along ``ingest.steering``'s
   directions, sized as seeded generation sizes them.

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
MIX_TABLE = {"coarse": (0.5, 0.9, 1.0), "middle": (0.1, 0.5, 0.9), "fine": (0.0, 0.1, 0.8)}
GENDER_MARGIN = 2.0  # a gender edit goes until the fitted logit reads this clearly
MAX_GENDER_STEP = 4.5  # style units, as far as age edits go
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


@dataclass(frozen=True)
class Inversion:
    """A photo inverted: W+ ``(1, layers, 512)``, its face descriptor, its aligned frame."""

    styles: torch.Tensor
    wanted: torch.Tensor
    frame: np.ndarray


@dataclass
class FacegenModels:
    """The photoreal generator, its style directions, the descriptor, the face finder."""

    generator: Any  # ingest.generators.photoreal.PhotorealGenerator
    steering: Any  # ingest.steering.Steering
    descriptor: Any  # analysis.recognition.FaceDescriptorNet
    find_face: Callable[[np.ndarray], tuple[int, int, int, int]] = find_one_face


def load_facegen_models(config: Mapping[str, Any]) -> FacegenModels:
    """The models ``ingest.seeded.load_studio_models`` loads, the descriptor for the estimator."""
    from analysis.device import configure_threads
    from analysis.recognition import FaceDescriptorNet
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
    return FacegenModels(generator, steering, descriptor)


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

    def __init__(self, loader: Callable[[], Any]) -> None:
        self._loader = loader
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
                    self._inverter = Inverter(models.generator, models.descriptor)
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
            styles = inverter.invert(frame, mask, iterations_for(steps), progress)
        return Inversion(styles, wanted, frame)

    def lookalikes(self, inversion: Inversion, job: LookalikeJob) -> LookalikeOutput:
        """Steps 3 and 4: ``job.samples`` look-alikes of an inversion, encoded and measured."""
        _check(job)
        started = time.monotonic()
        models, inverter = self.models, self._inverter
        assert inverter is not None
        inverted = inversion.styles
        with self._run, torch.no_grad():
            styles = mix(models, inverted, job)
            renders = [_render(models.generator, inverted, None)]
            noise = torch.Generator().manual_seed(int(job.seed))
            renders += [_render(models.generator, s[None], noise) for s in styles]
            frames = torch.cat([inverter.to_loss_size(r) for r in renders])
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
        )


def mix(models: Any, inverted: torch.Tensor, job: LookalikeJob) -> torch.Tensor:
    """``(samples, layers, 512)``: the inversion mixed with seeded random styles, edited."""
    steering = models.steering
    layers = inverted.shape[1]
    own = inverted[0].numpy().astype(np.float64)
    centre = own.mean(0)
    sign = _gender_sign(job.plan.gender, steering, centre)
    own_age = float(steering.age.predict(centre[None])[0])
    aim = (job.plan.age if job.plan.age is not None else own_age) + job.plan.age_shift
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
        if sign * score < GENDER_MARGIN and job.plan.gender is not None:
            moved = steering.gender.shift_to(
                mean[None], np.array([sign * GENDER_MARGIN]), MAX_GENDER_STEP
            )[0]
            mixed[i] += moved - mean
            mean = moved.astype(np.float64)
        if job.plan.age is not None or job.plan.age_shift:
            aged = steering.shift_age(mean[None], np.array([aim]))[0]
            mixed[i] += aged - mean
    return torch.from_numpy(mixed.astype(np.float32))


def _gender_sign(gender: str | None, steering: Any, centre: np.ndarray) -> float:
    """+1 female, -1 male: asked for, else what the inversion reads as."""
    if gender is None:
        return 1.0 if float(steering.female_score(centre[None])[0]) > 0 else -1.0
    return 1.0 if gender == "female" else -1.0


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
