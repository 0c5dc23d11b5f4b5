"""Generators for a target cell, behind the ``Generator`` protocol the pipeline takes.

Each strategy is an adapter around a real generator, so an on-demand run is an ordinary
``run_ingest`` run with a different generator and gate list, and admission (objects
first, row last, under the insert lock) is the pipeline's, not a second copy of it.

* ``SAMPLE``: the default generator itself; rejection sampling is the gates' job.
* ``SteeredPhotoreal``: the photoreal generator with each seed aimed at a (gender, age):
  the seed's candidate styles are scored by the fitted gender direction (no rendering)
  and the first clearly of the wanted gender is moved along the age direction to the
  aimed age, which keeps the identity (``ingest.steering``). The stored latent is the
  steered style, so it remakes the face.
* ``GuidedOptimiser``: the default generator's latent optimised toward the filter, with a
  fresh random augmentation (flip, shift, scale, noise) of the rendered face in every
  step, so the search cannot settle on pixel patterns that fool the estimator only in
  one exact framing; the robust gate then re-checks every result. Unguarded optimisation
  fools the estimator and is never offered.

Targeted adapters count their aims per (gender, age) in ``aims`` for the yield table.

``adapter_for`` picks the generator a plan runs with and ``gates_for`` the gate list of a
run for a target: together they are what makes a run on-demand, and like the adapters
they are needed only once the models are loaded (this module imports torch), so the
engine imports them when a run starts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ingest.gates import (
    AgeRangeGate,
    BlackBorderGate,
    BrokenImageGate,
    Gate,
    HashIndex,
    NearDuplicateGate,
    framing_gates,
)
from ingest.ondemand.yields import OPTIMISE, STEER
from ingest.robust_gates import RobustVerdictGate, TargetPrefilterGate

if TYPE_CHECKING:
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator
    from ingest.ondemand.models import ModelSet
    from ingest.ondemand.ports import Target
    from ingest.ondemand.yields import Plan

logger = logging.getLogger(__name__)


class _Delegate:
    """Forwards the ``Generator`` attributes to the wrapped generator."""

    def __init__(self, base: Generator) -> None:
        self.base = base
        self.checksum = base.checksum
        self.latent_dim = base.latent_dim
        self.native_size = base.native_size
        self.device = base.device
        view = getattr(base, "analysis_view", None)
        if view is not None:
            self.analysis_view = view

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        return self.base.render(latents)

    def generate(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.base.generate(latents, batch_size=batch_size)


def _aim(seed: int, gender: str | None, minimum_age: int, maximum_age: int) -> tuple[str, int]:
    """The (gender, age) a seed is aimed at: reproducible from the seed alone."""
    rng = np.random.default_rng([int(seed) & (2**63 - 1), 0x61696D])
    g = gender if gender is not None else ("female", "male")[int(rng.integers(2))]
    return g, int(rng.integers(minimum_age, maximum_age + 1))


# --- steering in style space -------------------------------------------------------------

# Candidate styles drawn per seed: about 40% score clearly male and 50% clearly female,
# and among those the one whose predicted age is nearest the aim is edited, so the edit
# is short. Mapping 64 styles costs a few milliseconds; rendering is what costs.
STEER_CANDIDATES = 64


class SteeredPhotoreal(_Delegate):
    """The photoreal generator aimed per seed at a (gender, age) by style-space steering.

    ``aim`` maps a seed to its (gender or None, age); on-demand aims inside a filter
    (``for_filter``), ingest aims at the catalog's target composition.
    """

    def __init__(
        self,
        base: Any,
        steering: Any,
        aim: Callable[[int], tuple[str | None, int]],
    ) -> None:
        super().__init__(base)
        self.name = base.name
        self.truncation = getattr(base, "truncation", None)
        self.steering = steering
        self.aim = aim
        self.aims: Counter[tuple[str, int]] = Counter()

    @classmethod
    def for_filter(
        cls, base: Any, steering: Any, gender: str | None, minimum_age: int, maximum_age: int
    ) -> SteeredPhotoreal:
        """Aimed at an age drawn uniformly inside the filter, and its gender (or either)."""

        def aim(seed: int) -> tuple[str | None, int]:
            return _aim(seed, gender, minimum_age, maximum_age)

        return cls(base, steering, aim)

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """One steered style per seed, ``(N, 512)`` float32 on the CPU."""
        from ingest.steering import aimed_styles

        rows = []
        for seed in seeds:
            gender, age = self.aim(int(seed))
            candidates = self.base.candidate_styles(int(seed), STEER_CANDIDATES)
            style, _ = aimed_styles(self.steering, candidates, gender, age)
            wanted = gender if gender is not None else self.steering.gender_of(style)
            self.aims[(wanted, age)] += 1
            rows.append(style)
        if not rows:
            return torch.empty((0, self.latent_dim), dtype=torch.float32)
        return torch.from_numpy(np.stack(rows).astype(np.float32))


# Steering reaches about 80 years convincingly; a "60+" aim is drawn from 60..80.
OLDEST_AIM = 80


def room_aim(room: dict[str, int]) -> Callable[[int], tuple[str | None, int]]:
    """Aims for ingest: a ``gender:band`` cell drawn in proportion to its room (faces it
    still needs to reach its target), then an age uniform inside the band.

    So an empty catalog is aimed at its target composition, and full cells get no aims.
    """
    from ingest.bands import parse_cell

    cells = [c for c, n in sorted(room.items()) if n > 0]
    weights = np.array([room[c] for c in cells], dtype=np.float64)

    def aim(seed: int) -> tuple[str | None, int]:
        rng = np.random.default_rng([int(seed) & (2**63 - 1), 0x696E67])
        if not cells:
            return None, int(rng.integers(20, 60))
        gender, band = parse_cell(cells[int(rng.choice(len(cells), p=weights / weights.sum()))])
        return gender, int(rng.integers(band.low, min(band.high, OLDEST_AIM) + 1))

    return aim


# --- guarded latent optimisation ---------------------------------------------------------


def random_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A differentiable random flip, ±4 px shift, 0.9–1.1 scale and mild noise per image.

    ``images`` are NHWC float 0..255. The same family as ``analysis.robust.DEFAULT`` (the
    noise stands in for JPEG, which is not differentiable), drawn afresh per call.
    """
    n, _, w, _ = images.shape
    x = images.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None].to(x.device), x.flip(3), x)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.randint(-4, 5, (n, 2), generator=generator).float() * 2.0) / w
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    noise = torch.randn(x.shape, generator=generator).to(x.device) * 3.0
    return (x + noise).clamp(0, 255).permute(0, 2, 3, 1)


class GuidedOptimiser(_Delegate):
    """The default generator with each seed's latent optimised toward the filter.

    Loss per face: hinge distance of the estimated age from the filter's range (with a
    ``margin`` of years inside it), cross-entropy toward the gender, and a prior term that
    keeps the latent's norm near that of a typical sample (so it stays a face the GAN can
    draw). Each step scores a fresh random augmentation of every face. Cost: ``steps``
    forward and backward passes through generator and estimator per batch.
    """

    def __init__(
        self,
        base: Generator,
        estimator: AgeGenderEstimator,
        gender: str | None,
        minimum_age: int,
        maximum_age: int,
        *,
        steps: int = 40,
        lr: float = 0.05,
        margin: float = 2.0,
        prior_weight: float = 1.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base)
        self.name = f"{base.name}-guided"
        self.estimator = estimator
        self.gender, self.minimum_age, self.maximum_age = gender, minimum_age, maximum_age
        self.steps, self.lr, self.margin, self.prior_weight = steps, lr, margin, prior_weight
        self.deadline, self.clock = deadline, clock
        self.steps_run = 0
        self.aims: Counter[tuple[str, int]] = Counter()

    def _loss(
        self, latents: torch.Tensor, female: torch.Tensor, low: float, high: float, rng: Any
    ) -> torch.Tensor:
        images = random_augment(self.base.render(latents), rng)
        age, p_female = self.estimator.predict_tensor(images)  # type: ignore[attr-defined]
        age_loss = F.relu(low - age) + F.relu(age - high)
        p = p_female.clamp(1e-4, 1 - 1e-4)
        gender_loss = -(female * torch.log(p) + (1 - female) * torch.log(1 - p))
        norm = latents.pow(2).mean(dim=1)
        prior = (norm - 1.0).pow(2)
        return (age_loss / 5.0 + gender_loss + self.prior_weight * prior).sum()

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """The seeds' latents after ``steps`` of augmented, regularised Adam."""
        latents = self.base.sample_latents(seeds)
        if len(seeds) == 0:
            return latents
        aims = [_aim(s, self.gender, self.minimum_age, self.maximum_age) for s in seeds]
        for gender, _age in aims:
            self.aims[(gender, (self.minimum_age + self.maximum_age) // 2)] += 1
        female = torch.tensor([g == "female" for g, _ in aims], dtype=torch.float32)
        female = female.to(self.device)
        low = min(self.minimum_age + self.margin, (self.minimum_age + self.maximum_age) / 2)
        high = max(self.maximum_age - self.margin, (self.minimum_age + self.maximum_age) / 2)
        rng = torch.Generator().manual_seed(int(seeds[0]) & (2**63 - 1))
        z = latents.clone().to(self.device).requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                # Past the deadline the batch goes to the robust gate as it is: a request
                # must not wait for steps it has no time for.
                if self.deadline is not None and self.clock() >= self.deadline:
                    logger.info("guided optimisation stopped at the deadline")
                    break
                self.steps_run += 1
                optimiser.zero_grad()
                loss = self._loss(z, female, low, high, rng)
                loss.backward()
                optimiser.step()
        return z.detach().cpu().to(torch.float32)


def adapter_for(
    plan: Plan,
    target: Target,
    models: ModelSet,
    deadline: float,
    *,
    optimise_steps: int,
    clock: Callable[[], float],
) -> Generator:
    """The generator a run with ``plan`` for ``target`` uses: the strategy's adapter around
    ``models.generator``, or the generator itself for plain sampling."""
    gender = target.gender if target.gender is not None else plan.gender
    if plan.strategy == STEER:
        if models.steering is None:
            raise RuntimeError("no style directions are loaded for the generator")
        return SteeredPhotoreal.for_filter(  # type: ignore[return-value]
            models.generator, models.steering, gender, target.minimum_age, target.maximum_age
        )
    if plan.strategy == OPTIMISE:
        return GuidedOptimiser(  # type: ignore[return-value]
            models.generator,
            models.estimator,
            gender,
            target.minimum_age,
            target.maximum_age,
            steps=optimise_steps,
            deadline=deadline,
            clock=clock,
        )
    return models.generator


def gates_for(
    target: Target,
    estimator: AgeGenderEstimator,
    *,
    gender_threshold: float,
    index: HashIndex,
    duplicate_distance: int,
) -> list[Gate]:
    """The on-demand gate list; the robust verdict is judged against ``target``."""
    return [
        *framing_gates(),
        AgeRangeGate(),
        BrokenImageGate(),
        BlackBorderGate(),
        TargetPrefilterGate(target),
        RobustVerdictGate(estimator, gender_threshold, target=target),
        NearDuplicateGate(index, duplicate_distance),
    ]
