"""Fitting the steering directions: ridge regressions of labelled samples' attributes on
their styles, with held-out errors.

Separate from ``ingest.steering`` because only the fitting commands (``facecat ingest
fit-directions``, ``ingest.steering.commands``) need it; the service loads a fitted file and never
fits. ``fit_direction`` does not know what the values mean: any attribute with labels
(a smile, glasses) fits the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from ingest.steering import Direction, Steering


def fit_direction(
    styles: np.ndarray,
    values: np.ndarray,
    *,
    alpha: float = 10.0,
    holdout: float = 0.2,
    seed: int = 0,
    stretch: bool = False,
) -> Direction:
    """Ridge regression of ``values`` on ``styles``, with held-out error and R².

    The held-out split (``holdout`` of the rows, drawn with ``seed``) only measures; the
    returned direction is refitted on every row. With ``stretch``, a line from the
    out-of-fold predictions (5 folds) back to the values is fitted too and applied by
    ``predict``: a ridge fit pulls predictions toward the mean, and choosing a child among
    candidates by a predicted age that says 15 for a child of 5 picks the wrong faces.
    """
    x = np.asarray(styles, np.float64)
    y = np.asarray(values, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 10:
        raise ValueError("need at least 10 labelled styles, as (N, D) and (N,)")
    order = np.random.default_rng(seed).permutation(len(x))
    cut = max(1, int(len(x) * holdout))
    test, train = order[:cut], order[cut:]
    part = _ridge(x[train], y[train], alpha)
    residual = y[test] - part.predict(x[test])
    heldout = {
        "mae": float(np.mean(np.abs(residual))),
        "r2": float(1.0 - residual.var() / max(y[test].var(), 1e-12)),
        "baseline_mae": float(np.mean(np.abs(y[test] - y[train].mean()))),
        "rows": len(test),
    }
    full = _ridge(x, y, alpha)
    line = (1.0, 0.0)
    if stretch:
        oof = np.empty(len(x))
        for fold in np.array_split(order, 5):
            rest = np.setdiff1d(order, fold)
            oof[fold] = _ridge(x[rest], y[rest], alpha).predict(x[fold])
        a = float(np.cov(oof, y)[0, 1] / max(oof.var(ddof=1), 1e-12))
        line = (a, float(y.mean() - a * oof.mean()))
        stretched = line[0] * oof + line[1]
        heldout["mae_stretched_oof"] = float(np.mean(np.abs(y - stretched)))
        heldout["mae_oof"] = float(np.mean(np.abs(y - oof)))
    return Direction(full.coef, full.intercept, full.centre, full.unit, heldout, line)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Direction:
    centre = x.mean(0)
    xc = x - centre
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y.mean()))
    norm = float(np.linalg.norm(coef))
    unit = coef / norm if norm > 0 else coef
    return Direction(coef, float(y.mean()), centre, unit)


def orthogonal_to(direction: Direction, other: Direction) -> Direction:
    """``direction`` with its unit made orthogonal to ``other``'s (same predictor)."""
    unit = direction.unit - (direction.unit @ other.unit) * other.unit
    norm = float(np.linalg.norm(unit))
    if norm < 1e-6:
        raise ValueError("the two directions are parallel: no orthogonal part is left")
    return replace(direction, unit=unit / norm)


def gender_logit(p_female: np.ndarray) -> np.ndarray:
    """The estimator's gender as a logit (female positive), clipped so certainties of 1.0
    do not dominate the fit."""
    p = np.clip(np.asarray(p_female, np.float64), 0.02, 0.98)
    return np.log(p / (1.0 - p))


def fit_steering(
    styles: np.ndarray,
    ages: np.ndarray,
    p_female: np.ndarray,
    *,
    generator_checksum: str,
    provenance: Mapping[str, Any],
    alpha: float = 10.0,
) -> Steering:
    """Fit both directions; the age one is made orthogonal to the gender one."""
    gender = fit_direction(styles, gender_logit(p_female), alpha=alpha)
    accuracy = _gender_accuracy(styles, p_female, alpha)
    gender = replace(gender, heldout=gender.heldout | accuracy)
    age = orthogonal_to(fit_direction(styles, ages, alpha=alpha, stretch=True), gender)
    return Steering(generator_checksum, age, gender, dict(provenance))


def _gender_accuracy(styles: np.ndarray, p_female: np.ndarray, alpha: float) -> dict[str, float]:
    """Held-out share of confidently labelled faces whose fitted score has the right sign."""
    p = np.asarray(p_female, np.float64)
    confident = np.maximum(p, 1 - p) >= 0.8
    n = int(confident.sum())
    if n < 10:
        return {"accuracy": None, "accuracy_rows": 0}  # too few confident labels to tell
    order = np.random.default_rng(1).permutation(n)
    x, y = np.asarray(styles)[confident][order], gender_logit(p[confident])[order]
    cut = max(1, n // 5)
    model = _ridge(x[cut:], y[cut:], alpha)
    right = np.sign(model.predict(x[:cut])) == np.sign(y[:cut])
    return {"accuracy": float(right.mean()), "accuracy_rows": cut}
