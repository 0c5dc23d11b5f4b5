"""Fold a fully retrained network into one of a gender's gated adapters.

Why: a full retraining for the teen cells (docs/coverage.md, 2026-11-30) made better
teenagers but moved every other cell, and a second network would not fit the 25 MB the
weights may take. A ``GatedAdapter`` can hold most of the difference instead, and it only
acts inside its gate, so every other request renders bit-identically.

At gate 1 the fold is exact except for the convolutions:

* BatchNorm: the expert's own statistics and affine, and its conditional gain and bias,
  are rewritten relative to the base network's BatchNorm output (a per-channel scale
  ``a`` and shift ``e``). The adapter's gain and bias are linear in the condition, as the
  expert's are, so the result is exact (``ConditionalBatchNorm.forward``).
* The condition map on the 4x4 features: the difference of the two linear maps, exact.
* Each transposed convolution: the weight difference, reshaped to ``(c_in, c_out*k*k)``,
  truncated by SVD to the adapter's rank (64). This is the only approximation; its
  relative error per layer is returned so a fold can be judged before it is measured.

On the gate's ramps the adapter's parameters are scaled by the gate, a blend of the two
networks' parameters rather than of their images.

The expert may also be fed a different condition than the base network: any affine map of
the condition folds exactly, since every path the condition takes is linear in it. A
retrained network has its own age scale, which the base network's calibration does not
fit, so ``age_map`` fits the map that feeds the expert an age of its own (an affine function
of the age the calibration gives), over the gate's ages.
"""

from __future__ import annotations

import torch

from ingest.generators import conditional as cond


def _low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(down, up, relative error)`` with ``down @ up`` the best rank-``rank`` fit of ``delta``."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    down = torch.zeros(delta.shape[0], rank, dtype=delta.dtype)
    up = torch.zeros(rank, delta.shape[1], dtype=delta.dtype)
    down[:, :keep] = u[:, :keep] * root
    up[:keep] = root[:, None] * vh[:keep]
    norm = float(delta.norm())
    error = float((delta - down @ up).norm()) / norm if norm > 0 else 0.0
    return down, up, error


ConditionMap = tuple[torch.Tensor, torch.Tensor]
# Relative singular value below which ``age_map``'s least-squares fit ignores a direction.
SINGULAR_CUTOFF = 1e-7


def age_map(
    low: float,
    high: float,
    targets: tuple[float, float],
    gender: str,
    guidance: float = 0.0,
    samples: int = 512,
) -> tuple[ConditionMap, float]:
    """``((M, m), error)``: the affine map with ``M @ c + m`` close to the condition of age
    ``f(a)`` for every condition ``c`` of ``gender`` at conditioning age ``a`` in
    ``[low, high]`` (gender guidance 0..1), fitted by least squares; ``f`` is linear with
    ``f(low), f(high) = targets``. ``guidance`` is added to the gender guidance ``s``
    (see ``conditional.encode_condition_unclamped``): the expert may need more than the
    base network to look as clearly of its gender.

    ``error`` is the largest absolute difference over a fresh grid, in condition units (the
    age column is age/100 and the age bumps are in 0..1).
    """

    def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ages = torch.linspace(low, high, n).repeat(5)
        scales = torch.linspace(0.0, 1.0, 5).repeat_interleave(n)
        female = torch.full_like(ages, float(cond.GENDERS.index(gender)))
        source = cond.encode_condition_unclamped(female, ages, scales)
        mapped = targets[0] + (ages - low) * (targets[1] - targets[0]) / (high - low)
        target = cond.encode_condition_unclamped(female, mapped, scales + guidance)
        return source, target

    source, target = grid(samples)
    design = torch.cat([source, torch.ones(len(source), 1)], 1).double()
    # The design is nearly singular (its singular values span 1e2 to 1e-14: the far age
    # bumps are almost zero over a few years, and the gender columns sum to the constant).
    # The default driver's rank cut sits among those values, so a rounding difference
    # could keep a 1e-12 direction and return coefficients large enough that the float32
    # map is off by 0.3 (seen once in a full test run). An SVD solve that drops directions
    # below 1e-7 of the largest keeps the coefficients under 1 and the fit within ~1e-6.
    solution = torch.linalg.lstsq(
        design, target.double(), rcond=SINGULAR_CUTOFF, driver="gelsd"
    ).solution.float()
    matrix, offset = solution[:-1].T.contiguous(), solution[-1].contiguous()
    check_source, check_target = grid(samples // 2 + 7)  # points between the fitted ones
    error = float((check_source @ matrix.T + offset - check_target).abs().max())
    return (matrix, offset), error


def _composed(
    layer: torch.nn.Linear, condition_map: ConditionMap | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s weight and bias as seen from the condition before ``condition_map``."""
    if condition_map is None:
        return layer.weight, layer.bias
    matrix, offset = condition_map
    return layer.weight @ matrix, layer.weight @ offset + layer.bias


@torch.no_grad()
def fold_into_adapter(
    network: cond.ConditionalDCGAN,
    expert: cond.ConditionalDCGAN,
    gender: str,
    condition_map: ConditionMap | None = None,
    index: int | None = None,
) -> dict[str, float]:
    """Write ``expert`` minus ``network`` into ``network``'s adapter for ``gender`` (its teen
    adapter, or adapter ``index``: see ``ConditionalDCGAN.add_adapter``).

    Only that adapter's weights change (not its gate, not whom it serves): the caller
    places the gate and switches it on, as for a trained adapter. What the adapter held
    (trained or folded) is replaced: the difference is taken from the network without it. With
    ``condition_map`` ``(M, m)`` the expert is fed ``M @ c + m`` where the network gets
    ``c``. Both networks must have the same architecture; BatchNorm is read in eval form
    (running statistics). Returns the relative Frobenius error of each convolution's
    rank-limited difference, ``{"ups.0": ..., ...}``.
    """
    adapter = network.adapters[network.adapter_index(gender, index)]
    in_w, in_b = _composed(expert.condition_in, condition_map)
    adapter.condition.weight.copy_(in_w - network.condition_in.weight)
    adapter.condition.bias.copy_(in_b - network.condition_in.bias)
    for i, (mine, theirs) in enumerate(zip(network.norms, expert.norms, strict=True)):
        if bool((mine.bn.weight == 0).any()):
            raise ValueError(f"norms.{i}: a zero BatchNorm weight cannot be rescaled")
        sigma = (mine.bn.running_var + mine.bn.eps).sqrt()
        sigma_e = (theirs.bn.running_var + theirs.bn.eps).sqrt()
        # expert BN output = a * (base BN output) + e, per channel
        a = sigma * theirs.bn.weight / (sigma_e * mine.bn.weight)
        e = (
            theirs.bn.bias
            + (mine.bn.running_mean - theirs.bn.running_mean) * theirs.bn.weight / sigma_e
            - a * mine.bn.bias
        )
        # (1 + gamma + A_gamma) = a (1 + gamma');  beta + A_beta = e (1 + gamma') + beta'
        g_w, g_b = _composed(theirs.gamma, condition_map)
        b_w, b_b = _composed(theirs.beta, condition_map)
        adapter.gammas[i].weight.copy_(a[:, None] * g_w - mine.gamma.weight)
        adapter.gammas[i].bias.copy_(a - 1.0 + a * g_b - mine.gamma.bias)
        adapter.betas[i].weight.copy_(e[:, None] * g_w + b_w - mine.beta.weight)
        adapter.betas[i].bias.copy_(e + e * g_b + b_b - mine.beta.bias)
    errors = {}
    for i, (mine, theirs, delta_module) in enumerate(
        zip(network.ups, expert.ups, adapter.ups, strict=True)
    ):
        delta = (theirs.weight - mine.weight).reshape(mine.weight.shape[0], -1)
        down, up, errors[f"ups.{i}"] = _low_rank(delta, delta_module.up.shape[0])
        delta_module.down.copy_(down)
        delta_module.up.copy_(up)
    return errors
