"""A 64x64 face generator conditioned on gender and age, fine-tuned on UTKFace.

Why this design (issue 7): the only training hardware is one shared CPU thread for about
1.5 hours. Training a conditional GAN from scratch at 64 px needs several CPU hours, so the
network starts from the default DCGAN (``gan-face-generate`` 1.1.1, trained on
DigiFace-1M): it already knows face layout, and fine-tuning it on real labelled faces is far
cheaper than learning faces from nothing. The condition enters in two places, both
initialised to zero so training starts exactly at the pretrained DCGAN:

* a linear map of the condition added to the first 4x4 feature map, and
* conditional batch norm: every BatchNorm's output is scaled by ``1 + gamma(c)`` and
  shifted by ``beta(c)``.

The noise ``z`` is shared between conditions, so one seed rendered at several ages keeps
the identity as far as the model allows.

The condition vector is gender one-hot (2), age/100 (1) and nine Gaussian bumps over age
(centres 0, 10, ..., 80 years, width 10): smooth in age, so a continuous age sweep is a
continuous path, and expressive enough for children and seniors.

Latents are ``latent_dim = 102``: the DCGAN's 100-d noise plus two standard-normal
coordinates that encode the condition (gender from the sign of the first, age from the
normal CDF of the second, uniform over 0..100 years). So ``render(latents)`` works
without a cell, as the ``Generator`` protocol needs, spreads over all cells evenly, and a
stored latent always remakes its face; ``generate_for`` rewrites those two coordinates.

The weights are fine-tuned on UTKFace, whose licence is non-commercial research only, and
start from DigiFace-1M-trained weights (also non-commercial): the weights in
``weights/conditional.pt`` are for non-commercial use only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.device import resolve_device
from ingest.generators.rendering import generate_uint8

logger = logging.getLogger(__name__)

NOISE_DIM = 100
CONDITION_LATENT_DIMS = 2
LATENT_DIM = NOISE_DIM + CONDITION_LATENT_DIMS
NATIVE_SIZE = 64
MAX_AGE = 100.0
AGE_CENTRES = tuple(float(a) for a in range(0, 90, 10))
AGE_WIDTH = 10.0
CONDITION_DIM = 2 + 1 + len(AGE_CENTRES)
GENDERS = ("male", "female")

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "conditional.pt"
DEFAULT_PROVENANCE = WEIGHTS_DIR / "conditional.json"


class ConditionalWeightsError(RuntimeError):
    """The conditional generator's weights are missing, corrupt or do not match."""


def encode_condition(female: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
    """``(N,)`` female flags (0/1, float) and ages in years -> ``(N, CONDITION_DIM)``.

    Ages are clamped to 0..100: UTKFace has a few faces up to 116 years, too few to learn
    from, and users filter with ages up to 100. This is the training encoding; the
    calibrated path (``ConditionalDCGAN.calibrated_condition``) may go beyond it.
    """
    return encode_condition_unclamped(female, age.clamp(0.0, MAX_AGE))


def encode_condition_unclamped(
    female: torch.Tensor, age: torch.Tensor, gender_scale: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """``encode_condition`` without the 0..100 clamp, with gender guidance.

    ``gender_scale`` ``s`` (per row or one number) pushes the gender one-hot past its
    training values: male ``[1 + s, -s]``, female ``[-s, 1 + s]`` (classifier-free-guidance
    style extrapolation along the gender axis; ``s = 0`` is the training encoding). Ages
    outside 0..100 extrapolate ``age/100`` and the age bumps; only the calibration uses
    them, and only where the sweep in ``tests/perf/calibrate_conditional.py`` measured it.
    """
    female = female.to(torch.float32).reshape(-1)
    age = age.to(torch.float32).reshape(-1)
    scale = torch.as_tensor(gender_scale, dtype=torch.float32, device=age.device)
    scale = scale.reshape(-1)[:, None] if scale.ndim else scale
    centres = torch.tensor(AGE_CENTRES, dtype=torch.float32, device=age.device)
    bumps = torch.exp(-0.5 * ((age[:, None] - centres[None, :]) / AGE_WIDTH) ** 2)
    onehot = torch.stack([1.0 - female, female], 1)
    gender = onehot * (1.0 + scale) - (1.0 - onehot) * scale
    return torch.cat([gender, (age / MAX_AGE)[:, None], bumps], 1)


def interpolate(x: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``values`` at ``x`` (clamped to the knots' range); differentiable in x.

    ``knots`` is ``(K,)`` strictly increasing; ``values`` is ``(K,)`` or one row per x
    ``(N, K)``.
    """
    x = x.reshape(-1)
    clamped = x.clamp(float(knots[0]), float(knots[-1]))
    upper = torch.bucketize(clamped, knots, right=True).clamp(1, len(knots) - 1)
    lower = upper - 1
    rows = values.expand(len(x), -1) if values.ndim == 1 else values
    y0 = rows.gather(1, lower[:, None])[:, 0]
    y1 = rows.gather(1, upper[:, None])[:, 0]
    t = (clamped - knots[lower]) / (knots[upper] - knots[lower])
    return y0 + t * (y1 - y0)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def condition_from_latents(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``(female, age)`` from the last two latent coordinates (see module doc)."""
    female = (latents[:, NOISE_DIM] > 0).to(torch.float32)
    age = _normal_cdf(latents[:, NOISE_DIM + 1]) * MAX_AGE
    return female, age


def latents_with_condition(latents: torch.Tensor, gender: str, age: float) -> torch.Tensor:
    """Copy of ``latents`` whose condition coordinates encode ``gender`` and ``age``.

    The noise part is untouched, so the identity is kept; storing the result lets the
    catalog remake the exact face from its latent alone.
    """
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    if not 0.0 <= float(age) <= MAX_AGE:
        raise ValueError(f"age must be within 0..{MAX_AGE:g}, got {age}")
    _check_latents(latents)
    out = latents.detach().clone().to(torch.float32)
    magnitude = out[:, NOISE_DIM].abs().clamp_min(0.5)  # keep the seed's own |u| when sane
    out[:, NOISE_DIM] = magnitude if gender == "female" else -magnitude
    # Keep the CDF strictly inside (0, 1) so the inverse is finite at ages 0 and 100.
    p = min(max(float(age) / MAX_AGE, 1e-4), 1.0 - 1e-4)
    out[:, NOISE_DIM + 1] = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(2.0 * p - 1.0))
    return out


def seed_latents(seeds: Sequence[int]) -> torch.Tensor:
    """One standard-normal latent per seed, ``(N, 102)`` float32 (see ``sample_latents``)."""
    rows = [
        np.random.default_rng(int(seed)).standard_normal(LATENT_DIM, dtype=np.float32)
        for seed in seeds
    ]
    if not rows:
        return torch.empty((0, LATENT_DIM), dtype=torch.float32)
    return torch.from_numpy(np.stack(rows))


def _check_latents(latents: torch.Tensor) -> None:
    if latents.ndim != 2 or latents.shape[1] != LATENT_DIM:
        raise ValueError(f"latents must be (N, {LATENT_DIM}), got {tuple(latents.shape)}")


def _zero_linear(inputs: int, outputs: int) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ConditionalBatchNorm(nn.Module):
    """BatchNorm2d (loadable from the DCGAN) plus a zero-initialised conditional affine."""

    def __init__(self, channels: int, condition_dim: int = CONDITION_DIM) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.gamma = _zero_linear(condition_dim, channels)
        self.beta = _zero_linear(condition_dim, channels)

    def forward(
        self,
        x: torch.Tensor,
        condition: torch.Tensor,
        extra: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``extra``: the gated adapters' gain and bias, added to the condition's own."""
        gamma = 1.0 + self.gamma(condition)
        beta = self.beta(condition)
        if extra is not None:
            gamma, beta = gamma + extra[0], beta + extra[1]
        return self.bn(x) * gamma[:, :, None, None] + beta[:, :, None, None]


# Conditioning ages (years) of the adapter's gate: 0 up to the first, rising to 1 at the
# second, 1 to the third, 0 again from the fourth (teenagers, see ``adapter_gate``).
ADAPTER_GATE_AGES = (11.0, 13.0, 19.0, 21.0)
# Requested years by which ``place_adapter_gate`` pulls the gate's outer edges inward.
GATE_EDGE_MARGIN = 0.01
# Rank of the adapter's change to each transposed convolution (LoRA-style, see LowRankDelta).
ADAPTER_RANK = 64
# Keys of the single adapter that files from 2026-12-01 carry (it served girls), mapped
# to one ``GatedAdapter`` by ``ConditionalDCGAN._per_gender_adapters``.
_FLAT_ADAPTER_KEYS = re.compile(
    r"^(condition_adapter\.|up_adapters\.|norms\.\d+\.adapter_(gamma|beta)\.|adapter_gate_ages$)"
)


class LowRankDelta(nn.Module):
    """A change ``down @ up`` (rank ``rank``) to one transposed convolution's weight.

    Why low rank: a full copy of every convolution's weight would double the 15 MB file,
    past the 25 MB the issue allows; rank 64 costs about 4 MB for all five layers.
    ``up`` starts at zero (the delta is exactly zero, as in LoRA), ``down`` at random so
    gradients reach ``up`` from the first step.
    """

    def __init__(self, conv: nn.ConvTranspose2d, rank: int = ADAPTER_RANK) -> None:
        super().__init__()
        c_in, c_out, k_h, k_w = conv.weight.shape
        self.weight_shape = (c_in, c_out, k_h, k_w)
        self.stride, self.padding = conv.stride, conv.padding
        bound = 1.0 / math.sqrt(c_in)
        self.down = nn.Parameter(torch.empty(c_in, rank).uniform_(-bound, bound))
        self.up = nn.Parameter(torch.zeros(rank, c_out * k_h * k_w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.down @ self.up).reshape(self.weight_shape)
        return nn.functional.conv_transpose2d(x, weight, stride=self.stride, padding=self.padding)


class GatedAdapter(nn.Module):
    """An adapter for one gender: extra condition paths and convolution changes, gated by age.

    Parts: a condition map added to the 4x4 features (``condition``), a gain and bias per
    BatchNorm (``gammas``/``betas``), a low-rank change to every transposed convolution
    (``ups``), all multiplied by the gate, a trapezoid on the conditioning age
    (``gate_ages``), for rows of its ``gender`` (0 male, 1 female) only. Why per gender: a
    single adapter trained on boys and girls together learnt one "teen look" in its
    convolution changes (they do not see the condition) and boys lost their gender
    (docs/coverage.md); apart, each is trained on its own gender. ``serving`` (0 or 1)
    switches it off for requests without changing the weights: the choice is measured and
    stored like the calibration.
    """

    def __init__(
        self,
        ups: Sequence[nn.ConvTranspose2d],
        norm_channels: Sequence[int],
        gender: int = 0,
    ) -> None:
        super().__init__()
        self.condition = _zero_linear(CONDITION_DIM, ups[0].weight.shape[1] * 16)
        self.gammas = nn.ModuleList([_zero_linear(CONDITION_DIM, c) for c in norm_channels])
        self.betas = nn.ModuleList([_zero_linear(CONDITION_DIM, c) for c in norm_channels])
        self.ups = nn.ModuleList([LowRankDelta(up) for up in ups])
        self.register_buffer("gate_ages", torch.tensor(ADAPTER_GATE_AGES))
        self.register_buffer("serving", torch.ones(()))
        self.register_buffer("gender", torch.tensor(float(gender)))

    @property
    def gender_name(self) -> str:
        """The gender whose rows this adapter changes, as requests name it."""
        return GENDERS[int(self.gender)]

    def gate(self, age: torch.Tensor) -> torch.Tensor:
        """Trapezoid in [0, 1] over conditioning ``age`` (years), times ``serving``.

        A trapezoid, so the adapter fades in over the ramps instead of switching on at one
        age (a seed swept across ages must age smoothly, see the identity sweep).
        """
        a0, a1, a2, a3 = self.gate_ages
        rise = (age - a0) / (a1 - a0)
        fall = (a3 - age) / (a3 - a2)
        return torch.minimum(rise, fall).clamp(0.0, 1.0) * self.serving

    def set_gate_ages(self, ages: Sequence[float]) -> None:
        """Move the gate (four strictly increasing conditioning ages)."""
        values = torch.as_tensor([float(a) for a in ages], dtype=torch.float32)
        if values.shape != (4,) or not bool((values.diff() > 0).all()):
            raise ValueError(f"gate ages must be 4 strictly increasing ages, got {list(ages)}")
        self.gate_ages.copy_(values.to(self.gate_ages.device))


# Requested ages (years) at which the calibration is stored; piecewise linear in between.
CALIBRATION_KNOTS = (0.0, 6.0, 16.0, 30.0, 50.0, 72.0, 100.0)
_CALIBRATION_BUFFERS = (
    "calibration_ages",
    "calibration_condition_ages",
    "calibration_gender_scale",
    "calibration_psi",
    "calibration_noise_direction",
    "calibration_noise_shift",
)
# Added after the first calibrated files: a file or a calibration without them has no shift.
_NOISE_SHIFT_BUFFERS = ("calibration_noise_direction", "calibration_noise_shift")


def identity_calibration() -> dict[str, torch.Tensor]:
    """The calibration buffers that change nothing: what training exports."""
    knots = torch.tensor(CALIBRATION_KNOTS, dtype=torch.float32)
    return {
        "calibration_ages": knots.clone(),
        "calibration_condition_ages": knots.repeat(2, 1),
        "calibration_gender_scale": torch.zeros(2, len(knots)),
        "calibration_psi": torch.ones(2, len(knots)),
        "calibration_noise_direction": torch.zeros(2, NOISE_DIM),
        "calibration_noise_shift": torch.zeros(2, len(knots)),
    }


def check_calibration(buffers: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless the buffers form a valid, monotone calibration.

    Monotone (strictly increasing conditioning age in the requested age, per gender) so
    one seed swept across ages still ages in one direction: the identity sweep and the
    Face Studio "lifetime" rely on it.
    """
    ages = buffers["calibration_ages"]
    cond_ages = buffers["calibration_condition_ages"]
    scale = buffers["calibration_gender_scale"]
    psi = buffers["calibration_psi"]
    direction = buffers["calibration_noise_direction"]
    shift = buffers["calibration_noise_shift"]
    k = len(ages)
    per_knot = (cond_ages, scale, psi, shift)
    if k < 2 or ages.shape != (k,) or any(b.shape != (2, k) for b in per_knot):
        raise ValueError(
            f"calibration shapes do not fit: {ages.shape}, {cond_ages.shape}, {scale.shape}, "
            f"{psi.shape}, {shift.shape}"
        )
    if direction.shape != (2, NOISE_DIM):
        raise ValueError(f"noise direction must be (2, {NOISE_DIM}), got {direction.shape}")
    norms = direction.norm(dim=1)
    if not bool(((norms == 0) | ((norms - 1).abs() < 1e-4)).all()):
        raise ValueError(f"each noise direction must be a unit vector or zero: norms {norms}")
    if not bool(shift.isfinite().all()):
        raise ValueError(f"noise shift must be finite: {shift}")
    if float(ages[0]) != 0.0 or float(ages[-1]) != MAX_AGE or not bool((ages.diff() > 0).all()):
        raise ValueError(f"calibration knots must rise strictly from 0 to {MAX_AGE:g}: {ages}")
    if not bool((cond_ages.diff(dim=1) > 0).all()):
        raise ValueError(f"calibrated ages must rise strictly (monotone map): {cond_ages}")
    if not bool((scale >= 0).all()) or not bool(((psi > 0) & (psi <= 1)).all()):
        raise ValueError(f"gender scale must be >= 0 and 0 < psi <= 1: {scale}, {psi}")


class ConditionalDCGAN(nn.Module):
    """The DCGAN generator (nz=100, ngf=64) with the condition injected as described above.

    ``ups[i]`` are the DCGAN's transposed convolutions ``main.{0,3,6,9,12}``; ``norms[i]``
    wrap its BatchNorms ``main.{1,4,7,10}``; see ``load_dcgan_state``.

    Inference-time calibration lives in registered buffers, so it is saved in the weights
    file and covered by its SHA-256 (the checksum the catalog records with every face):

    * ``calibration_ages`` ``(K,)``: requested-age knots 0..100;
    * ``calibration_condition_ages`` ``(2, K)``: the age fed to the network at each knot,
      per gender (row 0 male, row 1 female), strictly increasing; may leave 0..100;
    * ``calibration_gender_scale`` ``(2, K)``: gender guidance ``s`` at each knot;
    * ``calibration_psi`` ``(2, K)``: truncation at each knot, the noise is scaled by it
      (the truncation trick: 1 is none, smaller trades diversity for typical faces);
    * ``calibration_noise_direction`` ``(2, 100)`` and ``calibration_noise_shift``
      ``(2, K)``: a unit direction in the noise per gender (or zero) and how far along it
      the noise moves at each knot: the network gets ``psi * (z + shift * direction)``.
      Why: a linear boundary in the noise (InterFaceGAN) can make small boys more clearly
      male without the ageing that gender guidance brings (docs/coverage.md).

    ``forward`` takes a raw condition (training); ``render_request`` applies the calibration.
    A state without these buffers (an older file, a training snapshot) loads as identity.

    The **adapters** (``GatedAdapter``) add condition paths and a low-rank change to every
    convolution, multiplied by a gate on the conditioning age, for their gender's rows
    only. ``adapters[0]`` and ``adapters[1]`` are the boys' and girls' teen adapters (what
    an adapter run trains, and what the methods taking a gender address by default);
    ``add_adapter`` appends more (a retraining folded over other ages). Why: every other
    weight is shared by all ages, so retraining them for teenagers moved the other cells
    (docs/coverage.md); an adapter trained alone, with the rest frozen, cannot change any
    request outside its gate, and costs nothing for those requests (the convolution
    deltas run on gated rows only). A state without adapters loads with both at zero,
    which renders as before; a state with the single adapter of 2026-12-01 loads it into
    the gender(s) it served; a state with more adapters adds them on loading.
    """

    def __init__(self, features: int = 64) -> None:
        super().__init__()
        f = features
        channels = [NOISE_DIM, f * 8, f * 4, f * 2, f, 3]
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(channels[0], channels[1], 4, 1, 0, bias=False)]
            + [
                nn.ConvTranspose2d(channels[i], channels[i + 1], 4, 2, 1, bias=False)
                for i in range(1, 5)
            ]
        )
        self.norms = nn.ModuleList([ConditionalBatchNorm(c) for c in channels[1:5]])
        self.condition_in = _zero_linear(CONDITION_DIM, f * 8 * 16)
        self.adapters = nn.ModuleList([self._fresh_adapter(i) for i, _ in enumerate(GENDERS)])
        for name, value in identity_calibration().items():
            self.register_buffer(name, value)
        self._register_load_state_dict_pre_hook(self._identity_if_uncalibrated)
        self._register_load_state_dict_pre_hook(self._per_gender_adapters)

    def _fresh_adapter(self, gender: int) -> GatedAdapter:
        """A new adapter for ``gender`` (0 male, 1 female): zero in effect, serving."""
        adapter = GatedAdapter(self.ups, [n.bn.num_features for n in self.norms], gender)
        return adapter.to(self.condition_in.weight.device)

    def _identity_if_uncalibrated(self, state, prefix, *args, **kwargs) -> None:
        """Older files and training snapshots have no calibration: load them as identity.

        Files calibrated before the noise shift existed load with none (zero shift).
        """
        names = [prefix + name for name in _CALIBRATION_BUFFERS]
        uncalibrated = not any(name in state for name in names)
        for name, value in identity_calibration().items():
            if uncalibrated or (name in _NOISE_SHIFT_BUFFERS and prefix + name not in state):
                state[prefix + name] = value

    def _per_gender_adapters(self, state, prefix, *args, **kwargs) -> None:
        """Bring older files to one adapter per gender, and this module to the file's adapters.

        Files from before any adapter keep this module's fresh adapters (zero in effect:
        zero linear maps, ``up`` factors zero; the random ``down`` factors let an adapter
        run start from them), so they render as they did. Files with the single adapter of
        2026-12-01 (flat keys, ``adapter_genders`` saying whom it served) get it as the
        adapter of each gender it served, and a fresh one, not serving, for the others: the
        same rendering, bit for bit. Files from before adapters had a ``gender`` buffer hold
        the two teen adapters, in gender order. A file with adapters beyond those two gets
        them here, and one without drops this module's: the module renders as the file does.
        """
        flat = {
            k[len(prefix) :]: state.pop(k)
            for k in list(state)
            if k.startswith(prefix) and _FLAT_ADAPTER_KEYS.match(k[len(prefix) :])
        }
        served = state.pop(prefix + "adapter_genders", torch.ones(2) if flat else None)
        found = {
            int(k[len(prefix) :].split(".")[1]) for k in state if k.startswith(prefix + "adapters.")
        }
        count = max(len(GENDERS), 1 + max(found, default=0))
        kept = list(self.adapters)[: len(GENDERS)]
        for i in range(len(GENDERS), count):
            gender = state.get(f"{prefix}adapters.{i}.gender")
            if gender is None:
                raise RuntimeError(f"adapters.{i} has no gender buffer")
            kept.append(self._fresh_adapter(int(gender)))
        self.adapters = nn.ModuleList(kept)
        own = self.state_dict()
        for i in range(count):
            head = f"adapters.{i}."
            for name, value in own.items():
                if name.startswith(head) and prefix + name not in state:
                    state[prefix + name] = value.clone()
            if served is None or i >= len(GENDERS):  # per-gender adapters, or none
                continue
            takes_it = bool(flat) and bool(served[i])
            if takes_it:
                for old, value in flat.items():
                    state[prefix + head + _per_gender_key(old)] = value.clone()
            state[prefix + head + "serving"] = torch.tensor(float(takes_it))

    def add_adapter(self, gender: str) -> int:
        """Append a fresh adapter for ``gender`` (zero in effect, serving); its index.

        Why more than the two teen adapters: a retraining aimed at other ages (boys 0-12)
        can be folded in beside them, gated over its own ages (``ingest.generators.folding``).
        """
        self.adapters.append(self._fresh_adapter(self._gender_index(gender)))
        return len(self.adapters) - 1

    def reset_adapter(self, gender: str | None = None) -> None:
        """Put one gender's teen adapter (every adapter if None) back to fresh: zero in
        effect, serving.

        A full retraining changes the base network the adapters were trained on, so old
        adapters would no longer fit it.
        """
        for i in self._adapter_indices(gender):
            fresh = self._fresh_adapter(int(self.adapters[i].gender))
            self.adapters[i].load_state_dict(fresh.state_dict())

    @staticmethod
    def _gender_index(gender: str) -> int:
        if gender not in GENDERS:
            raise ValueError(f"unknown gender {gender!r}; expected one of {GENDERS}")
        return GENDERS.index(gender)

    def _adapter_indices(self, gender: str | None) -> list[int]:
        if gender is None:
            return list(range(len(self.adapters)))
        return [self._gender_index(gender)]

    def adapter_index(self, gender: str, index: int | None = None) -> int:
        """``index`` (default: ``gender``'s teen adapter), checked to serve ``gender``."""
        teen = self._gender_index(gender)  # also refuses an unknown gender
        if index is None:
            return teen
        if not 0 <= index < len(self.adapters):
            raise ValueError(f"no adapter {index}; there are {len(self.adapters)}")
        if self.adapters[index].gender_name != gender:
            raise ValueError(f"adapter {index} is not a {gender} adapter")
        return index

    def adapter_parameters(self, gender: str | None = None) -> list[nn.Parameter]:
        """The adapters' weights (one gender's teen adapter, or all): what an adapter run trains."""
        return [p for i in self._adapter_indices(gender) for p in self.adapters[i].parameters()]

    def adapter_gates(self, condition: torch.Tensor) -> torch.Tensor:
        """``(A, N)``: each adapter's gate per row; 0 for rows of another gender.

        The conditioning age is ``age/100`` (column 2). A row's gender is its larger
        one-hot entry, with or without gender guidance.
        """
        age = condition[:, 2] * MAX_AGE
        female = condition[:, 1] > condition[:, 0]
        return torch.stack(
            [
                adapter.gate(age) * torch.where(female, adapter.gender, 1.0 - adapter.gender)
                for adapter in self.adapters
            ]
        )

    def adapter_gate(self, condition: torch.Tensor) -> torch.Tensor:
        """``(N,)``: the summed gates of each row's adapters (see ``adapter_gates``)."""
        return self.adapter_gates(condition).sum(0)

    def set_adapter_gate_ages(
        self, gender: str, ages: Sequence[float], index: int | None = None
    ) -> None:
        """Move a gate of ``gender`` (four strictly increasing conditioning ages); the teen
        adapter's unless ``index`` names another.

        Why after training: the calibration maps a requested age to a conditioning age, so
        a gate need not sit where it was trained; moving it is an inference-time choice,
        measured like the calibration (``place_adapter_gate`` derives it from requested
        ages).
        """
        self.adapters[self.adapter_index(gender, index)].set_gate_ages(ages)

    def place_adapter_gate(
        self, gender: str, requested_ages: Sequence[float], index: int | None = None
    ) -> list[float]:
        """Put a gate of ``gender`` (see ``set_adapter_gate_ages``) at the conditioning ages
        the calibration maps ``requested_ages`` (four, rising) to; returns them.

        So the gate covers the requested ages exactly, whatever the calibration does. The
        two outer edges move ``GATE_EDGE_MARGIN`` years inward: a catalog latent carries its
        age through the normal CDF and decodes asked 20 as 19.999998, which an edge at
        exactly 20 would give a gate of ~1e-7, enough to change a few pixels of a request
        that must render as without the adapter. Requested ages below 0, which no request
        asks, map one conditioning year per year below the calibration's age at 0: a gate
        rising over (-2, -1) is fully open from age 0.
        """
        asked = torch.as_tensor([float(a) for a in requested_ages], dtype=torch.float32)
        asked[0] += GATE_EDGE_MARGIN
        asked[-1] -= GATE_EDGE_MARGIN
        female = torch.full_like(asked, float(self._gender_index(gender)))
        device = self.calibration_ages.device
        condition, _ = self.calibrated(female.to(device), asked.to(device))
        ages = (condition[:, 2].cpu() * MAX_AGE + asked.clamp(max=0.0)).tolist()
        self.set_adapter_gate_ages(gender, ages, index)
        return ages

    def set_adapter_genders(self, genders: Sequence[str]) -> None:
        """Serve the adapters of these genders only; the others render as without one."""
        unknown = set(genders) - set(GENDERS)
        if unknown:
            raise ValueError(f"unknown genders {sorted(unknown)}; expected some of {GENDERS}")
        for adapter in self.adapters:
            adapter.serving.fill_(float(adapter.gender_name in genders))

    def served_genders(self) -> list[str]:
        """The genders with an adapter switched on."""
        on = {a.gender_name for a in self.adapters if float(a.serving)}
        return [g for g in GENDERS if g in on]

    def calibration(self) -> dict[str, torch.Tensor]:
        """The calibration buffers (CPU copies)."""
        return {name: getattr(self, name).detach().cpu().clone() for name in _CALIBRATION_BUFFERS}

    def set_calibration(self, buffers: Mapping[str, torch.Tensor]) -> None:
        """Replace the calibration after checking it (``check_calibration``).

        The noise shift buffers may be left out: they keep their current values, so
        re-mapping the condition (``calibrate_conditional.py apply``) keeps a chosen shift.
        """
        current = self.calibration()
        values = {
            k: torch.as_tensor(buffers[k] if k in buffers else current[k], dtype=torch.float32)
            for k in _CALIBRATION_BUFFERS
        }
        check_calibration(values)
        for name, value in values.items():
            setattr(self, name, value.to(getattr(self, name).device))

    def calibrated(
        self, female: torch.Tensor, age: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Requested ``female`` flags and ages (0..100) -> (condition, noise scale ``psi``)."""
        female = female.to(torch.float32).reshape(-1)
        row = female.round().clamp(0, 1).long()
        knots = self.calibration_ages
        cond_age = interpolate(age, knots, self.calibration_condition_ages[row])
        scale = interpolate(age, knots, self.calibration_gender_scale[row])
        psi = interpolate(age, knots, self.calibration_psi[row])
        return encode_condition_unclamped(female, cond_age, scale), psi

    def noise_offset(self, female: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """``(N, 100)``: what the calibration adds to the noise before truncation."""
        row = female.to(torch.float32).reshape(-1).round().clamp(0, 1).long()
        shift = interpolate(age, self.calibration_ages, self.calibration_noise_shift[row])
        return shift[:, None] * self.calibration_noise_direction[row]

    def calibrated_noise(
        self, z: torch.Tensor, female: torch.Tensor, age: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Requested gender and age plus noise ``z`` -> (condition, noise fed to the network)."""
        condition, psi = self.calibrated(female, age)
        return condition, (z + self.noise_offset(female, age)) * psi[:, None]

    def render_request(
        self, z: torch.Tensor, female: torch.Tensor, age: torch.Tensor
    ) -> torch.Tensor:
        """Like ``forward`` for a requested gender and age, through the calibration."""
        condition, noise = self.calibrated_noise(z, female, age)
        return self(noise, condition)

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``(N, 100)`` noise, ``(N, CONDITION_DIM)`` condition -> ``(N, 3, 64, 64)`` in [-1, 1]."""
        gates = self.adapter_gates(condition)
        # Only adapters with a gated row take part; rows outside every gate stay
        # bit-identical to the network without adapters (nothing is added to them).
        active = [
            (adapter, gate, gate.nonzero().squeeze(1))
            for adapter, gate in zip(self.adapters, gates, strict=True)
            if bool(gate.any())
        ]
        x = self._up(0, z.reshape(z.shape[0], NOISE_DIM, 1, 1), active)
        x = x + self.condition_in(condition).reshape_as(x)
        for adapter, gate, _ in active:
            x = x + (gate[:, None] * adapter.condition(condition)).reshape_as(x)
        for i, norm in enumerate(self.norms):
            extra = None
            for adapter, gate, _ in active:
                gamma = gate[:, None] * adapter.gammas[i](condition)
                beta = gate[:, None] * adapter.betas[i](condition)
                extra = (gamma, beta) if extra is None else (extra[0] + gamma, extra[1] + beta)
            x = self._up(i + 1, torch.relu(norm(x, condition, extra)), active)
        return torch.tanh(x)

    def _up(self, i: int, x: torch.Tensor, active: list) -> torch.Tensor:
        """Transposed convolution ``i``, plus each active adapter's delta on its gated rows."""
        out = self.ups[i](x)
        for adapter, gate, rows in active:
            delta = adapter.ups[i](x[rows]) * gate[rows, None, None, None]
            out = out.index_add(0, rows, delta)  # other rows stay bit-identical
        return out

    def load_dcgan_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Initialise from the default DCGAN's ``netG_state_dict`` (strict on those keys)."""
        mapped: dict[str, torch.Tensor] = {}
        for i, index in enumerate((0, 3, 6, 9, 12)):
            mapped[f"ups.{i}.weight"] = state[f"main.{index}.weight"]
        for i, index in enumerate((1, 4, 7, 10)):
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                mapped[f"norms.{i}.bn.{leaf}"] = state[f"main.{index}.{leaf}"]
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if unexpected or any(
            not k.endswith(("gamma.weight", "gamma.bias", "beta.weight", "beta.bias"))
            and "condition_in" not in k
            for k in missing
        ):
            raise ValueError(
                f"DCGAN state does not fit: missing {missing}, unexpected {unexpected}"
            )


def is_adapter_key(name: str) -> bool:
    return name.startswith("adapters.")


def _per_gender_key(flat: str) -> str:
    """A key of the single 2026-12-01 adapter -> its key inside a ``GatedAdapter``."""
    if flat == "adapter_gate_ages":
        return "gate_ages"
    if flat.startswith("norms."):
        _, index, leaf, rest = flat.split(".", 3)  # norms.I.adapter_gamma.weight
        return f"{leaf.removeprefix('adapter_')}s.{index}.{rest}"
    return flat.replace("condition_adapter.", "condition.", 1).replace("up_adapters.", "ups.", 1)


def compact_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with equal tensors given as one, which ``torch.save`` writes once.

    Why: the two teen adapters hold one retraining's convolution changes (4.2 MB), so
    written twice they left no room in the 25 MB the weights may take for the boys' 0-12
    adapter. Loading copies every entry into its own parameter: nothing is shared when the
    network runs, and the rendering is the same.
    """
    kept: dict[tuple, list[torch.Tensor]] = {}
    compact: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        twins = kept.setdefault((tuple(tensor.shape), tensor.dtype, tensor.device), [])
        same = next((t for t in twins if torch.equal(t, tensor)), None)
        if same is None:
            twins.append(tensor)
        compact[name] = tensor if same is None else same
    return compact


def save_weights(network: ConditionalDCGAN, path: str | Path) -> None:
    """Write ``network``'s state to ``path``, each distinct tensor once (``compact_state``)."""
    torch.save(compact_state(network.state_dict()), path)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, streamed; used for the provenance record and for loading."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_provenance(path: str | Path) -> dict:
    """The JSON provenance written next to the weights by ``ingest.training``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConditionalWeightsError(
            f"provenance file {path} is missing; it records the weights' sha256"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConditionalWeightsError(f"provenance file {path} is not valid JSON: {exc}") from exc


class ConditionalGenerator:
    """Seeds plus a target gender and age in, 64x64 RGB faces out.

    Implements ``ingest.generators.Generator``; ``generate_for``/``render_for`` add the
    target cell. The weight file is refused unless its SHA-256 matches the one in the
    provenance file, because ``torch.load`` must never see an unverified file and the
    catalog records ``checksum`` with every face.
    """

    name = "conditional"
    latent_dim = LATENT_DIM
    native_size = NATIVE_SIZE

    def __init__(
        self,
        weights_path: str | Path = DEFAULT_WEIGHTS,
        device: str | torch.device | None = "auto",
        *,
        provenance_path: str | Path | None = None,
        expected_sha256: str | None = None,
    ) -> None:
        path = Path(weights_path)
        if not path.is_file():
            raise ConditionalWeightsError(
                f"conditional generator weights {path} are missing; train them with "
                "`facecat models train DATASET_DIR` or restore the file from git"
            )
        if expected_sha256 is None:
            prov_path = Path(provenance_path) if provenance_path else path.with_suffix(".json")
            expected_sha256 = read_provenance(prov_path).get("sha256")
            if not expected_sha256:
                raise ConditionalWeightsError(f"provenance file {prov_path} has no sha256")
        data = path.read_bytes()
        self.checksum: str = hashlib.sha256(data).hexdigest()
        if self.checksum != expected_sha256:
            raise ConditionalWeightsError(
                f"conditional generator weights {path} are corrupt: sha256 {self.checksum} "
                f"does not match the recorded {expected_sha256}; restore the file from git "
                "or retrain it"
            )
        self.device: torch.device = (
            device if isinstance(device, torch.device) else resolve_device(device)
        )
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            network = ConditionalDCGAN()
            network.load_state_dict(state, strict=True)
        except Exception as exc:  # torch raises several types for a bad file
            raise ConditionalWeightsError(
                f"cannot load conditional generator weights {path}: {exc}"
            ) from exc
        network.requires_grad_(False)  # gradients flow to latents only
        self.network = network.eval().to(self.device)
        logger.info(
            "loaded conditional generator from %s (sha256 %s) on %s",
            path,
            self.checksum[:12],
            self.device,
        )

    @classmethod
    def from_models_dir(
        cls, models_dir: str | Path | None = None, device: str | torch.device | None = "auto"
    ) -> ConditionalGenerator:
        """Registry entry point; the weights ship in the package, so ``models_dir`` is unused."""
        del models_dir
        return cls(DEFAULT_WEIGHTS, device=device)

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """One standard-normal latent per seed, ``(N, 102)`` float32 on the CPU.

        numpy's PCG64 normal sampler is stable across platforms and versions, so a seed
        names the same face everywhere; the first 100 coordinates are what the DCGAN would
        get for that seed.
        """
        return seed_latents(seeds)

    def _render_condition(self, z: torch.Tensor, female: torch.Tensor, age: torch.Tensor):
        images = self.network.render_request(
            z.to(self.device, torch.float32), female.to(self.device), age.to(self.device)
        )
        return ((images + 1.0) * 127.5).permute(0, 2, 3, 1)

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        """Differentiable ``(N, 64, 64, 3)`` float32 RGB in [0, 255]; cell read from the latent."""
        _check_latents(latents)
        female, age = condition_from_latents(latents)
        return self._render_condition(latents[:, :NOISE_DIM], female, age)

    def render_for(self, gender: str, age: float, latents: torch.Tensor) -> torch.Tensor:
        """Like ``render`` but for a target ``gender`` ("male"/"female") and ``age`` (years)."""
        return self.render(latents_with_condition(latents, gender, age))

    def generate(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``(N, 64, 64, 3)`` uint8 RGB on device, in batches so memory stays bounded."""
        _check_latents(latents)
        return generate_uint8(
            self.render,
            latents,
            batch_size=batch_size,
            native_size=self.native_size,
            device=self.device,
        )

    def generate_for(
        self, gender: str, age: float, latents: torch.Tensor, batch_size: int = 256
    ) -> torch.Tensor:
        """uint8 faces of ``gender`` and ``age`` for these latents' noise (identity kept)."""
        return self.generate(latents_with_condition(latents, gender, age), batch_size)
