"""Gender × band cells: what curation fills and ``TARGET_COMPOSITION`` weighs.

The genders and bands themselves are ``analysis.vocabulary``'s; this module names the
cells built from them (``female:20-39``) and the default share of each.
"""

from __future__ import annotations

from analysis.vocabulary import BANDS_BY_LABEL, GENDERS, Band, band_of

# Default target composition: even genders; adults weighted as users ask for them, while
# children and seniors keep a real share so curation keeps trying to fill them.
_BAND_SHARES = {"0-12": 0.08, "13-19": 0.12, "20-39": 0.42, "40-59": 0.25, "60+": 0.13}
DEFAULT_COMPOSITION: dict[str, float] = {
    f"{gender}:{label}": share / len(GENDERS)
    for gender in GENDERS
    for label, share in _BAND_SHARES.items()
}


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
