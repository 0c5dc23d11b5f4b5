"""The words every layer shares: the genders, the age range and the age bands.

Declared once, on the ground floor, so the API's parameters, curation's cells, the yield
table, the estimator's evaluation and ``/stats`` cannot disagree. The bands are the ones
the estimator is evaluated on (docs/models.md, "Accuracy"), so a band's count in the
catalog and its label error can be read side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

GENDERS: tuple[str, ...] = ("female", "male")
MIN_AGE, MAX_AGE = 0, 100


@dataclass(frozen=True)
class Band:
    """An inclusive age range with its display label."""

    label: str
    low: int
    high: int

    def contains(self, age: float) -> bool:
        """Whether a (rounded) age falls in this band."""
        return self.low <= round(age) <= self.high


BANDS: tuple[Band, ...] = (
    Band("0-12", 0, 12),
    Band("13-19", 13, 19),
    Band("20-39", 20, 39),
    Band("40-59", 40, 59),
    Band("60+", 60, MAX_AGE),
)
BANDS_BY_LABEL: dict[str, Band] = {b.label: b for b in BANDS}


def band_of(age: float) -> Band:
    """The band holding ``age`` (ages are clamped to 0..100 first)."""
    clamped = min(max(round(age), MIN_AGE), MAX_AGE)
    for band in BANDS:
        if band.low <= clamped <= band.high:
            return band
    raise AssertionError("bands cover 0..100")  # pragma: no cover
