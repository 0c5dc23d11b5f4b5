"""Training the conditional face generator (``facecat models train DATASET_DIR``).

What is trained and why (issue 7, measured on one shared CPU thread):

* G is ``ConditionalDCGAN``, initialised from the default DCGAN so it starts out knowing
  face layout; its conditional parts start at zero (see ``ingest.generators.conditional``).
* D is a small spectral-norm CNN with a projection term for the condition (Miyato &
  Koyama 2018) and hinge loss: the cheapest well-behaved conditional GAN objective.
* An auxiliary gender/age head on D, trained on the real labels, whose verdict on fakes
  G must match (AC-GAN): projection alone conditioned too weakly in the time we have.
* DiffAugment (colour, translation; Zhao et al. 2020) on both real and fake
  images, because 4,799 faces are few enough for D to memorise them.
* Cells are sampled evenly: a (gender x age band) cell uniformly, then a face in it, so
  the rare cells (teenage boys, seniors) are seen as often as young women.
* An exponential moving average of G's weights is what gets exported; its BatchNorm
  statistics are recomputed for the averaged weights before export.

No age or gender estimator is used in training, so the evaluation with the face-api
estimator (tests/perf/bench_conditional.py) measures the generator, not an adversarial
fit to the judge.

Options for continuing from trained weights (added for the teenage cells, whose measured
gap was a training problem, not a calibration one; docs/coverage.md):

* ``--init-from PATH``: G (and its EMA) start from a conditional weights file, calibration
  reset to identity; D starts fresh, so ``--d-warmup-steps`` trains D alone first (a fresh
  D's gradients would otherwise pull a trained G around at random).
* ``--band-weights``: sampling weight per age band (teen-weighted sampling).
* ``--band-loss-weight``: an age-band classification term (cross-entropy over the five
  catalog bands) on D's auxiliary head next to the L1 age term; it is sharp at the band
  edges (13, 20) where the L1 term in units of 20 years barely separates 16 from 22.
* ``--child-gender-weight`` / ``--teen-gender-weight``: the gender term weighted up for
  faces aged 0-12 / 13-19 (boys came out girlish; teen boys lost their gender first).
* ``--anchor-weight`` (with ``--init-from``): an L1 term that keeps G's output equal to
  the init network's, through that file's own calibration, for every requested age
  outside ``--anchor-free-ages``. The first teen retraining lifted teenagers but moved
  the whole age scale and lost the 60+ cells; the anchor lets training change what users
  get for the free ages only, and the stored calibration stays valid elsewhere.
* ``--adapter GENDER`` (with ``--init-from``): train only that gender's gated teen
  adapter (``GatedAdapter``: extra conditional paths and low-rank convolution changes
  multiplied by a gate on the conditioning age, placed where the init file's
  calibration puts requested ages 12.5-20); every other weight, the other gender's
  adapter and the BatchNorm statistics stay frozen (BN in eval mode, no recalibration at
  export), so every request outside the gate renders bit-identically, and the export
  keeps the init file's calibration. Fakes are rendered through that calibration, as
  users get them. D still sees every age and both genders (its auxiliary head must know
  what 10 and 25 look like to judge 16); weight the teen band up with
  ``--band-weights``, since fakes outside the gate teach G nothing. The anchor did not
  hold the other cells; this holds them by construction.
* ``--critic PATH`` (with ``--adapter``): a frozen critic from ``ingest.critic``,
  trained and checked on held-out real faces first, judges the fakes' age and gender
  instead of D's auxiliary head, which learns from scratch beside the GAN and was fooled
  by the boys' adapter. The face-api judge is still never used.

A run writes under ``--out``: ``last.pt`` (resumable checkpoint), ``samples/`` sheets and
export-ready EMA snapshots (BatchNorm recalibrated, ``snapshots.jsonl`` lists their step
and seconds), ``train.log``; at the end the EMA generator is exported to a small weights
file with a JSON provenance record next to it. ``--export-snapshot STEP`` exports an
earlier snapshot of a run instead (snapshots are chosen on held-out seeds).
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import itertools
import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from tqdm import tqdm

from analysis.device import resolve_device
from analysis.weights import weight_path
from ingest.generators import conditional as cond
from ingest.generators.dcgan import load_state_dict as load_dcgan_state

logger = logging.getLogger(__name__)

BAND_EDGES = ((0, 12), (13, 19), (20, 39), (40, 59), (60, 200))
BAND_LABELS = ("0-12", "13-19", "20-39", "40-59", "60+")
# Lower edges of bands 1..4, for torch.bucketize(..., right=True) on ages in years.
BAND_STARTS = tuple(float(low) for low, _ in BAND_EDGES[1:])
CHILD_MAX_AGE = 12.0
TEEN_MAX_AGE = 19.0
# Requested ages of an adapter's gate (0 up to the first, 1 from the second to the third,
# 0 from the fourth): teenagers 13-19, whatever conditioning ages the calibration gives them.
ADAPTER_GATE_REQUESTED_AGES = (12.5, 13.0, 19.5, 20.0)
SHEET_AGES = (6.0, 16.0, 28.0, 50.0, 75.0)
LICENCE = (
    "Non-commercial research use only: fine-tuned on UTKFace (non-commercial research "
    "licence) from DCGAN weights trained on DigiFace-1M (non-commercial)."
)


@dataclass
class TrainConfig:
    """Every knob of a run; stored in checkpoints and provenance so a run can be repeated."""

    dataset_dir: str
    out: str
    steps: int = 20000
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    max_seconds: float | None = None
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    ema_beta: float = 0.999
    sample_every: int = 500
    checkpoint_every: int = 250
    # Cutout (in the DiffAugment paper's set) is left out: it hides a quarter of the face,
    # where the age cues are, and slows learning in a run of only ~50 epochs.
    augment: str = "color,translation"
    aux_weight: float = 1.0
    init: str = "dcgan"
    models_dir: str | None = None
    threads: int | None = None
    export: str | None = str(cond.DEFAULT_WEIGHTS)
    # Continuing from trained weights (defaults keep the original recipe unchanged).
    init_from: str | None = None
    d_warmup_steps: int = 0
    band_weights: tuple[float, ...] | None = None
    band_loss_weight: float = 0.0
    child_gender_weight: float = 1.0
    teen_gender_weight: float = 1.0
    anchor_weight: float = 0.0
    anchor_free_ages: tuple[float, float] = (13.0, 19.0)
    adapter: str | None = None  # the gender whose teen adapter an adapter run trains
    adapter_tie_weight: float = 0.0
    critic: str | None = None  # a frozen critic (ingest.critic) judges G's age and gender

    def option_conflict(self) -> tuple[str, str] | None:
        """The first option that cannot be used as set, as ``(option, why)``; None if none.

        Why one place: the CLI reports it against the option before anything is loaded, and
        ``train`` refuses a config built in code (tests, notebooks) with the same words.
        """
        if self.anchor_weight and not self.init_from:
            return "--anchor-weight", "needs --init-from (the anchor)"
        if self.adapter and (not self.init_from or self.anchor_weight):
            return "--adapter", "needs --init-from (the network it adapts) and no --anchor-weight"
        if self.adapter_tie_weight and not self.adapter:
            return "--adapter-tie-weight", "needs --adapter"
        if self.critic and not self.adapter:
            return "--critic", "needs --adapter"
        return None


# --------------------------------------------------------------------------- data


def band_index(age: int) -> int:
    """Index of the age band (the catalog's bands) holding ``age``."""
    for i, (low, high) in enumerate(BAND_EDGES):
        if low <= age <= high:
            return i
    raise ValueError(f"age {age} outside every band")


def cell_index(female: bool, age: int) -> int:
    """Index of the (gender, age band) cell of a face: male bands 0-4, then female 5-9."""
    return int(female) * len(BAND_EDGES) + band_index(age)


class FaceDataset:
    """All faces of a utkface-dev-style folder, resized once and kept in memory as uint8.

    4,799 faces at 64x64 are 59 MB, so reading every image once beats a DataLoader with
    worker processes on a machine with two shared cores.
    """

    def __init__(
        self,
        root: str | Path,
        size: int = cond.NATIVE_SIZE,
        band_weights: Sequence[float] | None = None,
    ) -> None:
        root = Path(root)
        labels = root / "labels.csv"
        if not labels.is_file():
            raise click.ClickException(f"{labels} not found: expected file,age,gender rows")
        rows = list(csv.DictReader(labels.open()))
        images, ages, female = [], [], []
        for row in tqdm(rows, desc="loading faces", unit="face", leave=False):
            with Image.open(root / "images" / row["file"]) as img:
                img = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
                images.append(np.asarray(img, dtype=np.uint8))
            ages.append(int(row["age"]))
            if row["gender"] not in cond.GENDERS:
                raise click.ClickException(f"{labels}: unknown gender {row['gender']!r}")
            female.append(row["gender"] == "female")
        if not rows:
            raise click.ClickException(f"{labels} lists no faces")
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.ages = torch.tensor(ages, dtype=torch.float32)
        self.female = torch.tensor(female, dtype=torch.float32)
        cells = np.array([cell_index(f, a) for f, a in zip(female, ages, strict=True)])
        all_cells = [np.flatnonzero(cells == c) for c in range(2 * len(BAND_EDGES))]
        present = [c for c in range(len(all_cells)) if len(all_cells[c])]
        self.cells = [all_cells[c] for c in present]
        self.cell_bands = [c % len(BAND_EDGES) for c in present]
        self.cell_p: np.ndarray | None = None
        if band_weights is not None:
            if len(band_weights) != len(BAND_EDGES) or min(band_weights) < 0:
                raise click.ClickException(
                    f"band weights need {len(BAND_EDGES)} values >= 0 "
                    f"({', '.join(BAND_LABELS)}), got {list(band_weights)}"
                )
            p = np.array([band_weights[b] for b in self.cell_bands], dtype=np.float64)
            if p.sum() <= 0:
                raise click.ClickException("band weights leave no cell to sample")
            self.cell_p = p / p.sum()
        self.labels_sha256 = cond.sha256_file(labels)
        logger.info(
            "loaded %d faces from %s; per cell: %s",
            len(rows),
            root,
            [len(c) for c in self.cells],
        )

    def __len__(self) -> int:
        return len(self.ages)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Indices of ``n`` faces: a cell, then a face in it.

        Cells are drawn uniformly (balanced), or in proportion to their band's weight when
        the dataset was given ``band_weights``.
        """
        if self.cell_p is None:
            which = rng.integers(0, len(self.cells), size=n)
        else:
            which = rng.choice(len(self.cells), size=n, p=self.cell_p)
        return np.array([self.cells[c][rng.integers(0, len(self.cells[c]))] for c in which])

    def batch(self, rng: np.random.Generator, n: int, device: torch.device):
        """Real images in [-1, 1] (random horizontal flips) with their female flags and ages."""
        idx = torch.from_numpy(self.sample(rng, n))
        x = self.images[idx].to(torch.float32) / 127.5 - 1.0
        flip = torch.from_numpy(rng.random(n) < 0.5)
        x[flip] = x[flip].flip(3)
        return x.to(device), self.female[idx].to(device), self.ages[idx].to(device)


# --------------------------------------------------------------------------- DiffAugment


def _rand(n: int, device: torch.device, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, device=device)


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Differentiable augmentation (DiffAugment) applied identically to real and fake."""
    n, device = x.shape[0], x.device
    for name in filter(None, policy.split(",")):
        if name == "color":
            x = x + (_rand(n, device, 1, 1, 1) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (_rand(n, device, 1, 1, 1) * 2) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (_rand(n, device, 1, 1, 1) + 0.5) + mean
        elif name == "translation":
            h, w = x.shape[2], x.shape[3]
            sx, sy = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
            tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=device)
            ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=device)
            gb, gx, gy = torch.meshgrid(
                torch.arange(n, device=device),
                torch.arange(h, device=device),
                torch.arange(w, device=device),
                indexing="ij",
            )
            gx = torch.clamp(gx + tx + 1, 0, h + 1)
            gy = torch.clamp(gy + ty + 1, 0, w + 1)
            padded = F.pad(x, [1, 1, 1, 1])
            x = padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)
        elif name == "cutout":
            h, w = x.shape[2], x.shape[3]
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            ox = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=device)
            oy = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=device)
            gb, gx, gy = torch.meshgrid(
                torch.arange(n, device=device),
                torch.arange(ch, device=device),
                torch.arange(cw, device=device),
                indexing="ij",
            )
            gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
            gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
            mask = torch.ones(n, h, w, dtype=x.dtype, device=device)
            mask[gb, gx, gy] = 0
            x = x * mask.unsqueeze(1)
        else:
            raise ValueError(f"unknown augmentation {name!r}")
    return x.contiguous()


# --------------------------------------------------------------------------- discriminator


class ProjectionDiscriminator(nn.Module):
    """Spectral-norm CNN, 64 -> 4 px (0.7M parameters: D costs as much per image as G
    otherwise, on a CPU budget), with a projection term for the condition and an
    auxiliary head that predicts gender and age.

    score = psi(phi(x)) + <V c, phi(x)>: the condition is matched against the image's
    features rather than concatenated to pixels (Miyato & Koyama 2018).

    The auxiliary head (AC-GAN style, trained on real faces and their UTKFace labels
    only) was added after measuring the first run: with projection alone, after 1,500
    steps the requested age moved face-api's median estimate by 10 years (6 -> 72 asked)
    and gender not at all; the condition paths of G start at zero and the projection term
    gave them too weak a gradient for a 1.5-hour budget. The head is D's own; the face-api
    estimator that judges the results is never used in training.
    """

    def __init__(self, width: int = 32, bands: int = 0) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        chans = [3, w, w * 2, w * 4, w * 8]
        for c_in, c_out in itertools.pairwise(chans):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(chans[-1], 1))
        self.embed = spectral_norm(nn.Linear(cond.CONDITION_DIM, chans[-1], bias=False))
        # Spectral norm leaves the pooled features nearly constant across images (their
        # spread was 0.004 at step 250 of the second run, so a plain linear head learned
        # nothing); batch-normalising them first gives the head a usable signal.
        self.aux_norm = nn.BatchNorm1d(chans[-1], affine=False)
        self.aux = nn.Linear(chans[-1], 2)  # [female logit, (age - 40) / 20]
        # Optional age-band logits (created only when used, so a default D is unchanged).
        self.aux_band = nn.Linear(chans[-1], bands) if bands else None

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(adversarial score, female logit, (age - 40) / 20, band logits or None) per image."""
        features = self.body(x).sum(dim=[2, 3])
        score = self.linear(features).squeeze(1) + (self.embed(condition) * features).sum(1)
        normed = self.aux_norm(features)
        aux = self.aux(normed)
        band_logits = self.aux_band(normed) if self.aux_band is not None else None
        return score, aux[:, 0], aux[:, 1], band_logits


def age_bands(age: torch.Tensor) -> torch.Tensor:
    """Band index (0..4, the catalog's bands) of ages in years; fractional ages floor."""
    starts = torch.tensor(BAND_STARTS, dtype=age.dtype, device=age.device)
    return torch.bucketize(age, starts, right=True)


def aux_loss(
    female_logit: torch.Tensor,
    age_scaled: torch.Tensor,
    female: torch.Tensor,
    age: torch.Tensor,
    band_logits: torch.Tensor | None = None,
    *,
    band_weight: float = 0.0,
    child_gender_weight: float = 1.0,
    teen_gender_weight: float = 1.0,
) -> torch.Tensor:
    """Gender cross-entropy plus the L1 age error in units of 20 years.

    Centred on 40 so a zero-initialised head starts near the middle of the range.
    ``child_gender_weight`` and ``teen_gender_weight`` scale the gender term of faces aged
    0-12 and 13-19 (a weighted mean, so 1 is the plain mean); ``band_weight`` adds a
    cross-entropy over the five age bands on ``band_logits``, a signal that is sharp at
    the band edges.
    """
    if child_gender_weight == 1.0 and teen_gender_weight == 1.0:
        gender_term = F.binary_cross_entropy_with_logits(female_logit, female)
    else:
        weights = torch.where(
            age <= CHILD_MAX_AGE,
            child_gender_weight,
            torch.where(age <= TEEN_MAX_AGE, teen_gender_weight, 1.0),
        )
        per_face = F.binary_cross_entropy_with_logits(female_logit, female, reduction="none")
        gender_term = (per_face * weights).sum() / weights.sum()
    loss = gender_term + F.l1_loss(age_scaled, (age.clamp(0.0, cond.MAX_AGE) - 40.0) / 20.0)
    if band_weight:
        if band_logits is None:
            raise ValueError("band_weight needs band logits (ProjectionDiscriminator(bands=5))")
        loss = loss + band_weight * F.cross_entropy(band_logits, age_bands(age))
    return loss


# --------------------------------------------------------------------------- helpers


def _update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)


def _random_conditions(rng: np.random.Generator, n: int, device: torch.device):
    """Female flags and ages spread evenly over the 10 cells (ages uniform inside a band)."""
    female = torch.from_numpy((rng.random(n) < 0.5).astype(np.float32))
    bands = rng.integers(0, len(BAND_EDGES), size=n)
    lows = np.array([BAND_EDGES[b][0] for b in bands], dtype=np.float32)
    highs = np.array([min(BAND_EDGES[b][1], 90) for b in bands], dtype=np.float32)
    ages = torch.from_numpy(lows + rng.random(n).astype(np.float32) * (highs - lows + 1))
    return female.to(device), ages.to(device)


def anchored_requests(
    rng: np.random.Generator, n: int, free: tuple[float, float], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Requested female flags and ages, uniform over 0..100 outside the ``free`` ages."""
    low, high = free
    width = high - low
    female = torch.from_numpy((rng.random(n) < 0.5).astype(np.float32))
    ages = rng.random(n).astype(np.float32) * (cond.MAX_AGE - width)
    ages = np.where(ages >= low, ages + width, ages).astype(np.float32)
    return female.to(device), torch.from_numpy(ages).to(device)


def anchor_loss(
    g: cond.ConditionalDCGAN,
    anchor: cond.ConditionalDCGAN,
    rng: np.random.Generator,
    n: int,
    free: tuple[float, float],
    device: torch.device,
) -> torch.Tensor:
    """Mean L1 between ``g`` and the frozen ``anchor`` on the anchor's calibrated requests.

    Both networks see the same batch in training mode (batch statistics), so the term
    compares like with like; ``anchor``'s calibration (age map, gender guidance, noise
    scale, noise shift) turns each request into the condition and noise users are actually served.
    """
    female, ages = anchored_requests(rng, n, free, device)
    z = torch.from_numpy(rng.standard_normal((n, cond.NOISE_DIM), dtype=np.float32)).to(device)
    with torch.no_grad():
        condition, z = anchor.calibrated_noise(z, female, ages)
        target = anchor(z, condition)
    return F.l1_loss(g(z, condition), target)


def load_anchor(path: str | Path, device: torch.device) -> cond.ConditionalDCGAN:
    """The init weights with their calibration kept, frozen, in training mode (see
    ``anchor_loss``)."""
    net = cond.ConditionalDCGAN()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.to(device).train().requires_grad_(False)


# Batches of 64 for BatchNorm recalibration at export and snapshot time (tests lower it).
RECALIBRATION_BATCHES = 32


def recalibrate_batchnorm(
    net: cond.ConditionalDCGAN,
    rng: np.random.Generator,
    device: torch.device,
    batches: int | None = None,
) -> None:
    """Recompute BatchNorm running statistics for (EMA) weights over balanced conditions.

    The running statistics copied from the live G belong to its weights, not to the
    averaged ones; a cumulative average over fresh batches matches them again.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(batches or RECALIBRATION_BATCHES):
            z = torch.from_numpy(rng.standard_normal((64, cond.NOISE_DIM), dtype=np.float32))
            female, ages = _random_conditions(rng, 64, device)
            net(z.to(device), cond.encode_condition(female, ages))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    net.eval()


def sample_sheet(net: cond.ConditionalDCGAN, path: Path, device: torch.device, columns: int = 8):
    """A PNG grid: rows are the 10 cells (male then female, young to old), columns fixed seeds.

    The same noise in every row shows how well the identity survives a change of cell.
    """
    z = torch.from_numpy(
        np.stack(
            [
                np.random.default_rng(s).standard_normal(cond.LATENT_DIM, dtype=np.float32)
                for s in range(columns)
            ]
        )[:, : cond.NOISE_DIM]
    ).to(device)
    rows = []
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for female in (0.0, 1.0):
            for age in SHEET_AGES:
                c = cond.encode_condition(
                    torch.full((columns,), female), torch.full((columns,), age)
                )
                rows.append(net(z, c.to(device)))
    net.train(was_training)
    grid = torch.stack(rows)  # (rows, cols, 3, H, W)
    r, c, _, h, w = grid.shape
    grid = ((grid + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu()
    grid = grid.permute(0, 3, 1, 4, 2).reshape(r * h, c * w, 3).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # Python sources only: the weights file being exported is itself untracked.
            ["git", "status", "--porcelain", "--", "ingest/training.py", "ingest/generators/*.py"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("+uncommitted-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- training


def train(config: TrainConfig, command: Sequence[str] | None = None) -> Path | None:
    """Run (or resume) training; returns the exported weights path, if exporting.

    Stops at ``steps`` or after ``max_seconds`` of wall-clock time in this process,
    whichever comes first, always leaving a resumable checkpoint behind.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        return _train(config, out, command)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _train(config: TrainConfig, out: Path, command: Sequence[str] | None) -> Path | None:
    started = time.monotonic()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    conflict = config.option_conflict()
    if conflict:
        raise click.ClickException(" ".join(conflict))
    critic = None
    if config.critic:
        from ingest.critic import load_critic  # imported here: ingest.critic imports this module

        critic = load_critic(config.critic, device)
    data = FaceDataset(config.dataset_dir, band_weights=config.band_weights)

    g = cond.ConditionalDCGAN()
    init_sha = None
    if config.init_from:
        init_sha = load_init_weights(g, config.init_from, adapter_run=bool(config.adapter))
        if config.adapter:
            prepare_adapter_run(g, config.adapter)
    elif config.init == "dcgan":
        models_dir = config.models_dir or str(
            Path(__file__).resolve().parents[1] / "instance" / "models"
        )
        path = weight_path("dcgan", models_dir)
        init_sha = cond.sha256_file(path)
        g.load_dcgan_state(load_dcgan_state(Path(path).read_bytes()))
    elif config.init != "scratch":
        raise click.ClickException(f"--init must be dcgan or scratch, got {config.init!r}")
    anchor = None
    if config.anchor_weight:
        anchor = load_anchor(config.init_from, device)
    d = ProjectionDiscriminator(bands=len(BAND_EDGES) if config.band_loss_weight else 0)
    g.to(device).train()
    d.to(device).train()
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    if config.adapter:
        # Frozen BN statistics: batch statistics of teen-only batches would differ from
        # the running ones every other request is rendered with.
        g.eval().requires_grad_(False)
        trained = g.adapter_parameters(config.adapter)
        for p in trained:
            p.requires_grad_(True)
    else:
        trained = [p for name, p in g.named_parameters() if not cond.is_adapter_key(name)]
        for p in g.adapter_parameters():  # stays zero: it belongs to adapter runs
            p.requires_grad_(False)
    opt_g = torch.optim.Adam(trained, lr=config.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr_d, betas=(0.5, 0.999))

    step, seconds_before = 0, 0.0
    # What the provenance names as the run: the code commit and command it started with,
    # plus the commands of any resumes (an export long after the start keeps them).
    invocation = shlex.join(command) if command else None
    run = {"code_commit": _git_commit(), "commands": [invocation] if invocation else []}
    checkpoint_path = out / "last.pt"
    if checkpoint_path.exists():
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        g.load_state_dict(ckpt["g"])
        d.load_state_dict(ckpt["d"])
        g_ema.load_state_dict(ckpt["g_ema"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        step, seconds_before = ckpt["step"], ckpt["seconds"]
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        init_sha = ckpt.get("init_sha256", init_sha)
        if "run" in ckpt:
            commands = ckpt["run"]["commands"] + ([invocation] if invocation else [])
            run = {**ckpt["run"], "commands": commands}
        logger.info(
            "resumed from %s at step %d (%.0f s trained)", checkpoint_path, step, seconds_before
        )

    def save_checkpoint() -> None:
        tmp = checkpoint_path.with_suffix(".tmp")
        torch.save(
            {
                "g": g.state_dict(),
                "d": d.state_dict(),
                "g_ema": g_ema.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "step": step,
                "seconds": seconds_before + time.monotonic() - loop_start,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "config": asdict(config),
                "init_sha256": init_sha,
                "data": data_info,
                "run": run,
            },
            tmp,
        )
        tmp.replace(checkpoint_path)  # atomic: a kill mid-save keeps the previous checkpoint

    n_g = sum(p.numel() for p in trained)
    n_d = sum(p.numel() for p in d.parameters())
    logger.info(
        "G %.2fM trained params, D %.2fM params, device %s, threads %d",
        n_g / 1e6,
        n_d / 1e6,
        device,
        torch.get_num_threads(),
    )
    data_info = {"faces": len(data), "labels_csv_sha256": data.labels_sha256}
    loss_options = {
        "band_weight": config.band_loss_weight,
        "child_gender_weight": config.child_gender_weight,
        "teen_gender_weight": config.teen_gender_weight,
    }
    loop_start = time.monotonic()
    bs = config.batch_size
    progress = tqdm(total=config.steps, initial=step, desc="training", unit="step")
    stopped_by_clock = False
    while step < config.steps:
        if config.max_seconds is not None and time.monotonic() - started >= config.max_seconds:
            stopped_by_clock = True
            break
        real, female, ages = data.batch(rng, bs, device)
        c_real = cond.encode_condition(female, ages)
        z = torch.randn(bs, cond.NOISE_DIM, device=device)
        # D warm-up (after --init-from): a fresh D learns against the trained G first.
        warming_up = step < config.d_warmup_steps

        # One fake batch serves both steps (as in the PyTorch DCGAN recipe): a second G
        # forward pass would cost 12% of a step. Fakes take the real batch's conditions,
        # which the balanced sampler already spreads evenly over the 10 cells. An adapter
        # run renders them as users get them, through the stored calibration (its age map,
        # guidance and truncation): the adapter learns what a request for a teenager
        # returns, where its gate sits.
        with torch.set_grad_enabled(not warming_up):
            fake = g.render_request(z, female, ages) if config.adapter else g(z, c_real)

        # D step: hinge loss on augmented real and fake; the auxiliary head learns gender
        # and age from real faces only (fakes would teach it the generator's mistakes).
        d_real, real_female_logit, real_age, real_bands = d(
            diff_augment(real, config.augment), c_real
        )
        d_fake = d(diff_augment(fake.detach(), config.augment), c_real)[0]
        loss_aux_real = aux_loss(
            real_female_logit, real_age, female, ages, real_bands, **loss_options
        )
        loss_d = (
            F.relu(1.0 - d_real).mean()
            + F.relu(1.0 + d_fake).mean()
            + config.aux_weight * loss_aux_real
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # G step through the updated D (its weights frozen, so only input gradients).
        loss_anchor = loss_tie = torch.zeros(())
        if warming_up:
            loss_g = loss_aux_fake = torch.zeros(())
        else:
            d.requires_grad_(False)
            score, fake_female_logit, fake_age, fake_bands = d(
                diff_augment(fake, config.augment), c_real
            )
            if critic is not None:  # the frozen critic, not D's young head, judges age/gender
                fake_female_logit, fake_age, fake_bands = critic(diff_augment(fake, config.augment))
            loss_aux_fake = aux_loss(
                fake_female_logit, fake_age, female, ages, fake_bands, **loss_options
            )
            loss_g = -score.mean() + config.aux_weight * loss_aux_fake
            if anchor is not None:
                loss_anchor = anchor_loss(g, anchor, rng, bs, config.anchor_free_ages, device)
                loss_g = loss_g + config.anchor_weight * loss_anchor
            if config.adapter_tie_weight:
                loss_tie = adapter_tie_loss(g, config.adapter, fake, z, female, ages)
                loss_g = loss_g + config.adapter_tie_weight * loss_tie
            d.requires_grad_(True)
            # An adapter run's batch may hold no face inside its gender's gate: then G's
            # loss does not depend on what it trains, and there is nothing to step.
            if loss_g.requires_grad:
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
            _update_ema(g_ema, g, config.ema_beta)

        step += 1
        progress.update(1)
        if step % 10 == 0:
            progress.set_postfix(
                d=f"{loss_d.item():.3f}",
                g=f"{loss_g.item():.3f}",
                real=f"{d_real.mean().item():.2f}",
                fake=f"{d_fake.mean().item():.2f}",
                aux=f"{loss_aux_real.item():.2f}/{loss_aux_fake.item():.2f}",
            )
        if step % 100 == 0:
            elapsed = seconds_before + time.monotonic() - loop_start
            logger.info(
                "step %d loss_d %.4f loss_g %.4f d_real %.3f d_fake %.3f aux real %.3f fake %.3f"
                " anchor %.4f tie %.4f  %.0f s, %.1f img/s",
                step,
                loss_d.item(),
                loss_g.item(),
                d_real.mean().item(),
                d_fake.mean().item(),
                loss_aux_real.item(),
                loss_aux_fake.item(),
                loss_anchor.item(),
                loss_tie.item(),
                elapsed,
                step * bs / max(elapsed, 1e-9),
            )
        if step % config.checkpoint_every == 0:
            save_checkpoint()
        if step % config.sample_every == 0:
            sample_sheet(g_ema, out / "samples" / f"step_{step:06d}.png", device)
            save_snapshot(g_ema, config, out, step, seconds_before + time.monotonic() - loop_start)
    progress.close()
    save_checkpoint()
    total_seconds = seconds_before + time.monotonic() - loop_start
    logger.info(
        "stopped at step %d after %.0f s of training (%s)",
        step,
        total_seconds,
        "time budget" if stopped_by_clock else "step count",
    )
    sample_sheet(g_ema, out / "samples" / f"step_{step:06d}.png", device)
    if not config.export:
        return None
    return export(g_ema, config, data_info, step, total_seconds, init_sha, run)


def load_init_weights(
    g: cond.ConditionalDCGAN, path: str | Path, *, adapter_run: bool = False
) -> str:
    """Load a conditional weights file into ``g``; its sha256.

    A full run changes the base network, so the file's calibration is dropped (identity;
    the export is calibrated again afterwards, on its own measurements) and so is any
    trained adapter (it was fit to the old base). An adapter run keeps both: the base and
    its calibration are what the other cells go on being served with: the adapter's
    fakes are rendered through it and the export carries it unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise click.ClickException(f"--init-from {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        g.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise click.ClickException(
            f"--init-from {path} is not a conditional generator: {exc}"
        ) from exc
    if not adapter_run:
        g.set_calibration(cond.identity_calibration())
        g.reset_adapter()
    return cond.sha256_file(path)


def adapter_tie_loss(
    g: cond.ConditionalDCGAN,
    gender: str,
    fake: torch.Tensor,
    z: torch.Tensor,
    female: torch.Tensor,
    ages: torch.Tensor,
) -> torch.Tensor:
    """Mean L1 between the adapter's fakes and what the network renders without it, over
    the rows inside ``gender``'s gate (zero when there are none).

    Why: a boys' adapter trained against D's auxiliary head alone satisfied that head with
    faces another estimator read as 30-year-olds of unclear gender (docs/coverage.md);
    tying it to the base network's image for the same request keeps its changes small, a
    trust region around what already works. The network is in eval mode in adapter runs,
    so switching the adapter off for one forward pass changes nothing else.
    """
    index = cond.GENDERS.index(gender)
    adapter = g.adapters[index]
    condition, _ = g.calibrated(female, ages)
    rows = g.adapter_gates(condition)[index] > 0
    if not bool(rows.any()):
        return torch.zeros((), device=fake.device)
    serving = adapter.serving.clone()
    adapter.serving.zero_()
    try:
        with torch.no_grad():
            base = g.render_request(z[rows], female[rows], ages[rows])
    finally:
        adapter.serving.copy_(serving)
    return F.l1_loss(fake[rows], base)


def prepare_adapter_run(g: cond.ConditionalDCGAN, gender: str) -> None:
    """Serve ``gender``'s adapter, its gate over the requested teens; log what is trained.

    The gate is placed through the init file's calibration (requested 12.5-20, see
    ``ADAPTER_GATE_REQUESTED_AGES``), the same calibration the fakes are rendered with, so
    training and serving agree on which requests the adapter changes. The other gender's
    adapter is left as the init file has it (trained or fresh, serving or not).
    """
    g.set_adapter_genders([*g.served_genders(), gender])
    gate = g.place_adapter_gate(gender, ADAPTER_GATE_REQUESTED_AGES)
    logger.info(
        "adapter run for %s: gate at conditioning ages %s (requested %s); adapters served: %s",
        gender,
        [round(a, 2) for a in gate],
        list(ADAPTER_GATE_REQUESTED_AGES),
        g.served_genders(),
    )


def export_ready(g_ema: cond.ConditionalDCGAN, config: TrainConfig) -> cond.ConditionalDCGAN:
    """A CPU copy of the EMA generator as it is saved: BatchNorm and calibration settled.

    A full run recomputes BN statistics for the averaged weights and exports identity
    calibration (calibrating is a separate, measured step). An adapter run changed neither
    BN statistics nor anything outside its gate, and its network still carries the init
    file's calibration (``load_init_weights``): the copy is saved as it is, so the cells
    outside the gate stay exactly as calibrated.
    """
    net = copy.deepcopy(g_ema).cpu().eval()
    if not config.adapter:
        recalibrate_batchnorm(net, np.random.default_rng(config.seed + 1), torch.device("cpu"))
        net.set_calibration(cond.identity_calibration())
    return net


def _snapshot_path(out: Path, step: int) -> Path:
    return out / "samples" / f"g_ema_{step:06d}.pt"


def save_snapshot(
    g_ema: cond.ConditionalDCGAN, config: TrainConfig, out: Path, step: int, seconds: float
) -> Path:
    """Save an export-ready copy of the EMA generator and log its step and seconds.

    BatchNorm statistics are recomputed exactly as ``export`` does (same seed), so a
    snapshot measures like the file it would become; the copy leaves training untouched.
    """
    net = export_ready(g_ema, config)
    path = _snapshot_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    with (out / "snapshots.jsonl").open("a") as handle:
        record = {"step": step, "seconds": round(seconds, 1), "file": path.name}
        handle.write(json.dumps(record) + "\n")
    return path


def export_snapshot(out: str | Path, step: int, export_path: str | Path, command=None) -> Path:
    """Export the EMA snapshot a run saved at ``step`` (chosen on held-out seeds).

    The provenance is the run's (config, code commit and command from ``last.pt``), with
    the snapshot's own step count and training seconds, and this export's command.
    """
    out = Path(out)
    checkpoint_path, snapshot = out / "last.pt", _snapshot_path(out, step)
    if not checkpoint_path.is_file() or not snapshot.is_file():
        raise click.ClickException(f"need {checkpoint_path} and {snapshot}")
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    records = [json.loads(line) for line in (out / "snapshots.jsonl").read_text().splitlines()]
    seconds = next((r["seconds"] for r in reversed(records) if r["step"] == step), None)
    if seconds is None:
        raise click.ClickException(f"{out}/snapshots.jsonl has no step {step}")
    config = TrainConfig(**{**ckpt["config"], "export": str(export_path)})
    if config.band_weights is not None:
        config.band_weights = tuple(config.band_weights)
    net = cond.ConditionalDCGAN()
    net.load_state_dict(torch.load(snapshot, map_location="cpu", weights_only=True))
    run = ckpt.get("run") or {"code_commit": _git_commit(), "commands": []}
    return export(
        net, config, ckpt["data"], step, seconds, ckpt.get("init_sha256"), run,
        snapshot=snapshot, export_command=shlex.join(command) if command else None,
    )  # fmt: skip


def export(
    g_ema: cond.ConditionalDCGAN,
    config: TrainConfig,
    data_info: dict,
    step: int,
    seconds: float,
    init_sha: str | None,
    run: dict,
    snapshot: Path | None = None,
    export_command: str | None = None,
) -> Path:
    """Write the EMA generator (CPU float32, see ``export_ready``) and its provenance JSON.

    A full run's file carries identity calibration buffers: a fresh export renders exactly
    what it was trained on. Calibrating the condition is a separate, measured step
    (``tests/perf/calibrate_conditional.py apply``) that rewrites the file.
    """
    net = export_ready(g_ema, config)
    path = Path(config.export)
    path.parent.mkdir(parents=True, exist_ok=True)
    cond.save_weights(net, path)
    sha = cond.sha256_file(path)
    if config.init_from:
        init = {"from": "conditional weights", "path": config.init_from, "weights_sha256": init_sha}
    else:
        init = {"from": config.init, "dcgan_weights_sha256": init_sha}
    provenance = {
        "generator": cond.ConditionalGenerator.name,
        "architecture": "ConditionalDCGAN (DCGAN nz=100 ngf=64 + conditional BN + condition "
        "added to the 4x4 map), projection discriminator, hinge loss, DiffAugment, EMA",
        "sha256": sha,
        "data": {
            "path": str(Path(config.dataset_dir).resolve()),
            "faces": data_info["faces"],
            "labels_csv_sha256": data_info["labels_csv_sha256"],
            "name": "UTKFace (utkface-dev subset, whole 200x200 chips resized to 64x64)",
        },
        "init": init,
        "code_commit": run["code_commit"],
        "command": run["commands"][0] if run["commands"] else None,
        "config": asdict(config),
        "steps": step,
        "images_seen": step * config.batch_size,
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "licence": LICENCE,
        "calibration": None,  # identity; tests/perf/calibrate_conditional.py records one
    }
    if config.adapter:
        trained = net.adapters[cond.GENDERS.index(config.adapter)]
        provenance["adapter"] = {
            "gender": config.adapter,
            "gate_ages": [float(a) for a in trained.gate_ages],
            "gate_requested_ages": list(ADAPTER_GATE_REQUESTED_AGES),
            "served": net.served_genders(),
            "trained_parameters": sum(p.numel() for p in trained.parameters()),
            "frozen": "every other weight and the BatchNorm statistics, from the init file",
        }
        if config.critic:
            provenance["adapter"]["critic"] = {
                "path": config.critic,
                "sha256": cond.sha256_file(config.critic),
            }
        provenance["calibration"] = (
            "kept from the init file; place the gate to fit it (calibrate_conditional.py "
            "adapter) or recalibrate the teen knots"
        )
    if len(run["commands"]) > 1:
        provenance["resumed_with"] = run["commands"][1:]
    if snapshot is not None:
        provenance["snapshot"] = str(snapshot)
        provenance["export_command"] = export_command
    path.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info("exported %s (sha256 %s) and its provenance", path, sha[:12])
    return path


@click.command("train")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    default="runs/conditional",
    show_default=True,
    help="Run folder for checkpoints, sample sheets and the log (keep it out of git).",
)
@click.option("--steps", default=20000, show_default=True, help="Total training steps.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seeds data order, noise and init.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt instead of refusing.")
@click.option(
    "--max-seconds",
    type=float,
    default=None,
    help="Wall-clock budget for this invocation; stops cleanly and exports.",
)
@click.option(
    "--threads", type=int, default=None, help="torch CPU threads (leave cores to others)."
)
@click.option("--sample-every", default=500, show_default=True)
@click.option("--checkpoint-every", default=250, show_default=True)
@click.option(
    "--init",
    type=click.Choice(["dcgan", "scratch"]),
    default="dcgan",
    show_default=True,
    help="Start G from the default DCGAN's weights or from random weights.",
)
@click.option(
    "--init-from",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start G from a conditional weights file (e.g. the committed one) instead of "
    "--init; its calibration is reset to identity. D starts fresh: see --d-warmup-steps.",
)
@click.option(
    "--d-warmup-steps",
    default=0,
    show_default=True,
    help="Train D alone for this many first steps (G and its EMA frozen).",
)
@click.option("--lr-g", default=2e-4, show_default=True, help="Adam learning rate of G.")
@click.option("--lr-d", default=2e-4, show_default=True, help="Adam learning rate of D.")
@click.option(
    "--aux-weight", default=1.0, show_default=True, help="Weight of D's auxiliary head loss."
)
@click.option(
    "--band-weights",
    default=None,
    help="Sampling weight per age band 0-12,13-19,20-39,40-59,60+ (e.g. 1,3,1,1,1); "
    "default: every gender x band cell equally often.",
)
@click.option(
    "--band-loss-weight",
    default=0.0,
    show_default=True,
    help="Weight of an age-band cross-entropy on D's auxiliary head (0: L1 age only).",
)
@click.option(
    "--child-gender-weight",
    default=1.0,
    show_default=True,
    help="Weight of the auxiliary gender term for faces aged 0-12, relative to others.",
)
@click.option(
    "--anchor-weight",
    default=0.0,
    show_default=True,
    help="With --init-from: weight of an L1 term keeping G's output, through the init "
    "file's calibration, equal to the init network's for requested ages outside "
    "--anchor-free-ages (0: off).",
)
@click.option(
    "--anchor-free-ages",
    default="13,19",
    show_default=True,
    help="Requested ages LOW,HIGH that --anchor-weight leaves free to change.",
)
@click.option(
    "--teen-gender-weight",
    default=1.0,
    show_default=True,
    help="Weight of the auxiliary gender term for faces aged 13-19, relative to others.",
)
@click.option(
    "--adapter",
    type=click.Choice(cond.GENDERS),
    default=None,
    help="Train only this gender's gated teen adapter (needs --init-from); everything else frozen.",
)
@click.option(
    "--adapter-tie-weight",
    default=0.0,
    show_default=True,
    help="With --adapter: weight of an L1 term tying the adapter's faces to the network's "
    "without it, for the same request (0: off).",
)
@click.option(
    "--critic",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="With --adapter: a critic from `facecat models train-critic`, frozen, judges the "
    "fakes' age and gender instead of D's auxiliary head.",
)
@click.option("--ema-beta", default=0.999, show_default=True, help="EMA decay of G's weights.")
@click.option(
    "--export-snapshot",
    "snapshot_step",
    type=int,
    default=None,
    help="Do not train: export the EMA snapshot this run (OUT) saved at this step.",
)
@click.option(
    "--export",
    "export_path",
    default=str(cond.DEFAULT_WEIGHTS),
    show_default=True,
    help="Where the final EMA generator goes (its provenance JSON goes next to it).",
)
def train_command(
    dataset_dir: str,
    out: str,
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    resume: bool,
    max_seconds: float | None,
    threads: int | None,
    sample_every: int,
    checkpoint_every: int,
    init: str,
    init_from: str | None,
    d_warmup_steps: int,
    lr_g: float,
    lr_d: float,
    aux_weight: float,
    band_weights: str | None,
    band_loss_weight: float,
    child_gender_weight: float,
    teen_gender_weight: float,
    anchor_weight: float,
    anchor_free_ages: str,
    adapter: str | None,
    adapter_tie_weight: float,
    critic: str | None,
    ema_beta: float,
    snapshot_step: int | None,
    export_path: str,
) -> None:
    """Train the gender- and age-conditioned generator on a utkface-dev-style folder.

    Example: ``facecat models train ../shared/data/utkface-dev --threads 1 --max-seconds 5400``.
    """
    if snapshot_step is not None:
        if not export_path:
            raise click.ClickException("--export-snapshot needs --export PATH")
        path = export_snapshot(out, snapshot_step, export_path, command=sys.argv)
        click.echo(f"exported {path}")
        return
    weights = None
    if band_weights is not None:
        try:
            weights = tuple(float(x) for x in band_weights.split(","))
        except ValueError:
            raise click.BadParameter(
                f"not numbers: {band_weights!r}", param_hint="--band-weights"
            ) from None
        if len(weights) != len(BAND_EDGES) or min(weights) < 0 or sum(weights) <= 0:
            raise click.BadParameter(
                f"need {len(BAND_EDGES)} weights >= 0 ({','.join(BAND_LABELS)})",
                param_hint="--band-weights",
            )
    try:
        free_low, free_high = (float(x) for x in anchor_free_ages.split(","))
    except ValueError:
        raise click.BadParameter(
            f"need LOW,HIGH ages: {anchor_free_ages!r}", param_hint="--anchor-free-ages"
        ) from None
    if not 0 <= free_low < free_high <= cond.MAX_AGE:
        raise click.BadParameter(
            f"need 0 <= LOW < HIGH <= {cond.MAX_AGE:g}", param_hint="--anchor-free-ages"
        )
    models_dir = None
    try:
        from flask import current_app

        models_dir = current_app.config.get("MODELS_DIR")
    except RuntimeError:  # run outside an app context (python -m ingest.training)
        pass
    config = TrainConfig(
        dataset_dir=dataset_dir,
        out=out,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
        max_seconds=max_seconds,
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        init=init,
        models_dir=models_dir,
        threads=threads,
        export=export_path or None,
        lr_g=lr_g,
        lr_d=lr_d,
        aux_weight=aux_weight,
        ema_beta=ema_beta,
        init_from=init_from,
        d_warmup_steps=d_warmup_steps,
        band_weights=weights,
        band_loss_weight=band_loss_weight,
        child_gender_weight=child_gender_weight,
        teen_gender_weight=teen_gender_weight,
        anchor_weight=anchor_weight,
        anchor_free_ages=(free_low, free_high),
        adapter=adapter,
        adapter_tie_weight=adapter_tie_weight,
        critic=critic,
    )
    conflict = config.option_conflict()
    if conflict:
        option, why = conflict
        raise click.BadParameter(why, param_hint=option)
    if (Path(out) / "last.pt").exists() and not resume:
        raise click.ClickException(f"{out}/last.pt exists: pass --resume or choose another --out")
    path = train(config, command=sys.argv)
    if path:
        click.echo(f"exported {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    train_command()
