"""Age bands and gender × band cells: the vocabulary of curation and of /stats.

The bands are the ones the estimator is evaluated on (README "Accuracy"), so a band's
count and its label error can be read side by side. They live in ``ingest`` because
curation decides by them and ``ingest`` may not import ``catalog``; ``catalog`` reports
by them (``/stats``, ``facecat catalog stats``) and validates ``TARGET_COMPOSITION``.
"""

from __future__ import annotations

from dataclasses import dataclass

GENDERS: tuple[str, ...] = ("female", "male")


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
    Band("60+", 60, 100),
)
BANDS_BY_LABEL: dict[str, Band] = {b.label: b for b in BANDS}

# Default target composition: even genders; adults weighted as users ask for them, while
# children and seniors keep a real share so curation keeps trying to fill them.
_BAND_SHARES = {"0-12": 0.08, "13-19": 0.12, "20-39": 0.42, "40-59": 0.25, "60+": 0.13}
DEFAULT_COMPOSITION: dict[str, float] = {
    f"{gender}:{label}": share / len(GENDERS)
    for gender in GENDERS
    for label, share in _BAND_SHARES.items()
}


def band_of(age: float) -> Band:
    """The band holding ``age`` (ages are clamped to 0..100 first)."""
    clamped = min(max(round(age), 0), 100)
    for band in BANDS:
        if band.low <= clamped <= band.high:
            return band
    raise AssertionError("bands cover 0..100")  # pragma: no cover


def cell_key(gender: str, age: float) -> str:
    """``female:20-39``-style key for a face."""
    return f"{gender}:{band_of(age).label}"


def parse_cell(key: str) -> tuple[str, Band]:
    """Split a ``gender:band`` key, raising ValueError on anything else."""
    gender, _, label = key.partition(":")
    if gender not in GENDERS or label not in BANDS_BY_LABEL:
        raise ValueError(
            f"unknown cell {key!r}: expected <{'|'.join(GENDERS)}>:<{'|'.join(BANDS_BY_LABEL)}>"
        )
    return gender, BANDS_BY_LABEL[label]
