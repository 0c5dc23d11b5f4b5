"""A frozen age and gender critic for adapter runs (``facecat models train-critic``).

Why it exists: the boys' teen adapter (docs/coverage.md, 2026-12-01) learnt to satisfy
D's auxiliary head, which trains from scratch beside the GAN and had not learnt ages
when the adapter used it (it read real boys of 6-12 as 16.6). This critic is trained
first, alone, to convergence on real UTKFace faces, and is checked on faces it never saw
(a stratified held-out split) before any generator sees its gradients. In an adapter run
(``facecat models train --critic PATH``) it replaces D's head as the age and gender
signal for G; D keeps its adversarial role.

It is our own model trained on UTKFace's labels. The face-api estimator that judges
the generator (tests/perf/bench_conditional.py) is never used to train it, so the
benchmark still measures the generator rather than a fit to the judge.

Design: a plain CNN with BatchNorm (no spectral norm: it is not a GAN discriminator and
needs sharp features), 64 px input like the generator's output, predicting a female
logit, the age in D's units ((age - 40) / 20) and logits over the five catalog bands,
so ``training.aux_loss`` scores it exactly as it scores D's head. Trained on cells drawn
evenly (teenagers are 9% of the data) with flips and DiffAugment's colour and
translation, the augmentations G's fakes get before the critic sees them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from analysis.device import resolve_device
from ingest.generators import conditional as cond
from ingest.training import (
    BAND_EDGES,
    BAND_LABELS,
    FaceDataset,
    age_bands,
    aux_loss,
    cell_index,
    diff_augment,
)

logger = logging.getLogger(__name__)

CRITIC_FORMAT = "facecat-age-gender-critic/1"


class AgeGenderCritic(nn.Module):
    """64 px face -> (female logit, (age - 40) / 20, band logits); 0.7M parameters."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(chans):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
            ]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(chans[-1], 2 + len(BAND_EDGES))
        self.width = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] at 64 px -> female logit, scaled age, band logits."""
        features = self.dropout(self.body(x).mean(dim=[2, 3]))
        out = self.head(features)
        return out[:, 0], out[:, 1], out[:, 2:]

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(female) and age in years, for reports (no gradients, eval mode kept by caller)."""
        with torch.no_grad():
            female_logit, age_scaled, _ = self(x)
        return torch.sigmoid(female_logit), age_scaled * 20.0 + 40.0


@dataclass
class CriticConfig:
    """Every knob of a critic run; stored with the weights so the run can be repeated."""

    dataset_dir: str
    out: str
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    holdout: float = 0.15
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    augment: str = "color,translation"
    band_weight: float = 1.0


def holdout_split(
    female: torch.Tensor, ages: torch.Tensor, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) face indices: ``fraction`` of every (gender, band) cell held out.

    Stratified so the rare cells (117 teenage boys would be ~18 faces at random) are
    represented in the check, and seeded so a critic's report can be reproduced.
    """
    if not 0.0 < fraction < 1.0:
        raise click.BadParameter(f"need 0 < fraction < 1, got {fraction}", param_hint="--holdout")
    rng = np.random.default_rng(seed)
    cells = np.array(
        [cell_index(bool(f), int(a)) for f, a in zip(female.tolist(), ages.tolist(), strict=True)]
    )
    train, held = [], []
    for cell in np.unique(cells):
        members = rng.permutation(np.flatnonzero(cells == cell))
        n_held = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        held.append(members[:n_held])
        train.append(members[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def _images(data: FaceDataset, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    return (data.images[torch.from_numpy(idx)].to(torch.float32) / 127.5 - 1.0).to(device)


def evaluate(
    critic: AgeGenderCritic,
    data: FaceDataset,
    indices: np.ndarray,
    device: torch.device,
    band_weight: float = 1.0,
) -> dict:
    """Loss and, per (gender, band) cell, gender accuracy, age MAE and band accuracy."""
    critic.eval()
    losses, p_female, age_years, band_pred = [], [], [], []
    with torch.no_grad():
        for chunk in np.array_split(indices, max(1, len(indices) // 256)):
            x = _images(data, chunk, device)
            female_logit, age_scaled, band_logits = critic(x)
            female = data.female[chunk].to(device)
            ages = data.ages[chunk].to(device)
            loss = aux_loss(
                female_logit, age_scaled, female, ages, band_logits, band_weight=band_weight
            )
            losses.append(float(loss) * len(chunk))
            p_female.append(torch.sigmoid(female_logit).cpu())
            age_years.append((age_scaled * 20.0 + 40.0).cpu())
            band_pred.append(band_logits.argmax(1).cpu())
    p_female_t, age_t, band_t = torch.cat(p_female), torch.cat(age_years), torch.cat(band_pred)
    female_true = data.female[indices]
    ages_true = data.ages[indices]
    bands_true = age_bands(ages_true)
    report: dict = {"loss": sum(losses) / len(indices), "faces": len(indices), "cells": {}}
    for gender_flag, gender in ((0.0, "male"), (1.0, "female")):
        for band, label in enumerate(BAND_LABELS):
            mask = (female_true == gender_flag) & (bands_true == band)
            if not mask.any():
                continue
            gender_ok = (p_female_t[mask] >= 0.5) == bool(gender_flag)
            report["cells"][f"{gender} {label}"] = {
                "faces": int(mask.sum()),
                "gender_accuracy": round(float(gender_ok.float().mean()), 3),
                "age_mae": round(float((age_t[mask] - ages_true[mask]).abs().mean()), 2),
                "median_age": round(float(age_t[mask].median()), 1),
                "band_accuracy": round(float((band_t[mask] == band).float().mean()), 3),
            }
    return report


def train_critic(config: CriticConfig) -> Path:
    """Train a critic, keep the epoch with the lowest held-out loss; path of ``critic.pt``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = FaceDataset(config.dataset_dir)
    train_idx, held_idx = holdout_split(data.female, data.ages, config.holdout, config.seed)
    if len(held_idx) == 0:
        raise click.ClickException("too few faces per cell to hold any out for the check")
    # The data set's own cells, less the held-out faces (a cell held out whole is dropped).
    cells = [c for c in (np.intersect1d(cell, train_idx) for cell in data.cells) if len(c)]
    critic = AgeGenderCritic().to(device)
    steps_per_epoch = max(1, len(train_idx) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    opt = torch.optim.AdamW(critic.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=total_steps)
    best: dict | None = None
    history = []
    started = time.monotonic()
    progress = tqdm(total=total_steps, desc="training critic", unit="step")
    for epoch in range(1, config.epochs + 1):
        critic.train()
        for _ in range(steps_per_epoch):
            # Cells drawn evenly, then a face in the cell: teenagers are 9% of UTKFace.
            which = rng.integers(0, len(cells), size=config.batch_size)
            idx = np.array([cells[c][rng.integers(0, len(cells[c]))] for c in which])
            x = _images(data, idx, device)
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            x = diff_augment(x, config.augment)
            female_logit, age_scaled, band_logits = critic(x)
            loss = aux_loss(
                female_logit,
                age_scaled,
                data.female[idx].to(device),
                data.ages[idx].to(device),
                band_logits,
                band_weight=config.band_weight,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            progress.update(1)
        report = evaluate(critic, data, held_idx, device, config.band_weight)
        history.append({"epoch": epoch, "held_out_loss": round(report["loss"], 4)})
        progress.set_postfix(train=f"{loss.item():.3f}", held_out=f"{report['loss']:.3f}")
        if best is None or report["loss"] < best["report"]["loss"]:
            best = {"epoch": epoch, "report": report}
            torch.save(critic.state_dict(), out / "best_state.pt")
    progress.close()
    assert best is not None
    critic.load_state_dict(torch.load(out / "best_state.pt", map_location=device))
    (out / "best_state.pt").unlink()
    record = {
        "format": CRITIC_FORMAT,
        "config": asdict(config),
        "command": sys.argv,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "labels_csv_sha256": data.labels_sha256,
        "held_out_indices": held_idx.tolist(),
        "best_epoch": best["epoch"],
        "held_out": best["report"],
        "history": history,
    }
    path = out / "critic.pt"
    torch.save({"state_dict": critic.cpu().state_dict(), "record": record}, path)
    summary = {**record, "sha256": cond.sha256_file(path)}
    (out / "critic.json").write_text(json.dumps(summary, indent=1))
    logger.info("critic: best epoch %d, held-out loss %.4f", best["epoch"], best["report"]["loss"])
    return path


def load_critic(path: str | Path, device: torch.device | str = "cpu") -> AgeGenderCritic:
    """A trained critic, frozen and in eval mode (its BatchNorm statistics fixed)."""
    saved = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(saved, dict) or saved.get("record", {}).get("format") != CRITIC_FORMAT:
        raise click.ClickException(f"{path} is not a critic written by train-critic")
    # Its random initialisation is overwritten at once; forking keeps it from drawing on
    # the global generator, so a run with a critic sees the same random stream as without.
    with torch.random.fork_rng(devices=[]):
        critic = AgeGenderCritic()
    critic.load_state_dict(saved["state_dict"])
    return critic.to(device).eval().requires_grad_(False)


@click.command("train-critic")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option(
    "--holdout",
    default=0.15,
    show_default=True,
    type=float,
    help="Share of every (gender, band) cell kept out of training and used to check it.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="torch CPU threads.")
def train_critic_command(
    dataset_dir: str,
    out: str,
    epochs: int,
    batch_size: int,
    lr: float,
    holdout: float,
    seed: int,
    device: str,
    threads: int | None,
) -> None:
    """Train the age and gender critic that adapter runs can use (``train --critic``).

    Prints the held-out report per (gender, band) cell: check it before using the critic.
    """
    config = CriticConfig(
        dataset_dir=dataset_dir,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
        device=device,
        threads=threads,
    )
    path = train_critic(config)
    record = torch.load(path, weights_only=False)["record"]
    click.echo(f"critic {path} (best epoch {record['best_epoch']} of {epochs}); held out:")
    for cell, figures in record["held_out"]["cells"].items():
        click.echo(
            f"  {cell:14s} n={figures['faces']:4d} gender {100 * figures['gender_accuracy']:.0f}%"
            f"  age MAE {figures['age_mae']:.1f}  median {figures['median_age']:.1f}"
            f"  band {100 * figures['band_accuracy']:.0f}%"
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    train_critic_command()
